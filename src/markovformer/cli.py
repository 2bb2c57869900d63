"""The ``markovformer`` command line.

    markovformer list
    markovformer reproduce ID [ID ...] [--seeds N] [--steps N] [--device cpu|cuda] [--out DIR]
    markovformer report ID [ID ...] [--seeds N] [--steps N] [--out DIR]

``reproduce`` runs at the papers' settings unless told otherwise, shows progress, stores every run
under ``DIR`` (resuming whatever is already there) and writes the figure to
``DIR/figures/ID.png``. ``report`` prints the summary of stored results without training.
``ID`` may be ``all``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

from . import experiments
from .artifacts import ArtifactError, atomic_write


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="markovformer",
        description="Reproduce the figures of the markovformer book.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the reproducible figure ids")
    for name, helptext in (
        ("reproduce", "compute missing runs and draw the figures"),
        ("report", "print the summary of stored results (no training)"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument(
            "ids", nargs="+", metavar="ID", help="figure ids (see `markovformer list`) or 'all'"
        )
        p.add_argument("--seeds", type=_positive, default=None, help="seeds per configuration")
        p.add_argument(
            "--steps", type=_positive, default=None, help="training steps (default: paper)"
        )
        p.add_argument(
            "--out", type=Path, default=Path("runs"), help="results directory (default: runs)"
        )
        if name == "reproduce":
            p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
            p.add_argument(
                "--chunk-size", type=_positive, default=None, help="runs per batched program"
            )
            p.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def _resolve_ids(ap: argparse.ArgumentParser, ids: list[str]) -> list[experiments.Experiment]:
    known = {e.id: e for e in experiments.all_experiments()}
    if "all" in ids:
        return list(known.values())
    unknown = [i for i in ids if i not in known]
    if unknown:
        ap.error(
            f"unknown figure id(s) {', '.join(unknown)}; known ids: {', '.join(sorted(known))}"
        )
    return [known[i] for i in ids]


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.command == "list":
        width = max(len(e.id) for e in experiments.all_experiments())
        for e in experiments.all_experiments():
            print(f"{e.id:<{width}}  {e.description}  [default seeds: {e.default_seeds}]")
        return 0

    import matplotlib

    matplotlib.use("Agg")
    exps = _resolve_ids(ap, args.ids)
    for exp in exps:
        start = time.perf_counter()
        try:
            if args.command == "reproduce":
                print(f"== {exp.id}: {exp.description}", flush=True)
                results, jobs = exp.run(
                    args.out, args.seeds, args.steps, device=args.device,
                    chunk_size=args.chunk_size, progress=not args.quiet,
                    log=lambda m: print(m, flush=True),
                )  # fmt: skip
                fig_path = args.out / "figures" / f"{exp.id}.png"
                _save_figure(exp.figure(results, jobs), fig_path)
                print(f"figure: {fig_path}")
            else:
                results, jobs = exp.load(args.out, args.seeds, args.steps)
        except (ArtifactError, ValueError) as exc:
            print(f"markovformer: error: {exp.id}: {exc}", file=sys.stderr)
            return 1
        if exp.summary is not None:
            print(json.dumps(exp.summary(results, jobs), indent=1))
        print(f"{exp.id}: done in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
