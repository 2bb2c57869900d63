"""The ``markovformer`` command line.

    markovformer list
    markovformer reproduce ID [ID ...] [--seeds N] [--steps N] [--device cpu|cuda] [--out DIR]
                           [--workers N]
    markovformer report ID [ID ...] [--seeds N] [--steps N] [--out DIR]
    markovformer claims [--out DIR] [--chapter N ...] [--format text|markdown|json]

``reproduce`` runs at the papers' settings unless told otherwise, shows progress, stores every run
under ``DIR`` (resuming whatever is already there) and writes the figure to
``DIR/figures/ID.png``. ``report`` prints the summary of stored results without training.
``ID`` may be ``all``. ``claims`` evaluates every claim the book asserts on the stored results
(default ``book/data``) and prints one row per claim; it exits with 1 if any fails.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
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
            p.add_argument(
                "--workers", type=_positive, default=1,
                help="CPU processes training independent chunks at once (one torch thread each)",
            )  # fmt: skip
    c = sub.add_parser("claims", help="check every claim of the book on the stored results")
    c.add_argument(
        "--out", type=Path, default=Path("book/data"), help="results directory (default: book/data)"
    )
    c.add_argument("--chapter", type=int, nargs="+", default=None, help="only these chapters")
    c.add_argument("--format", choices=["text", "markdown", "json"], default="text")
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


def _writable_dir(path: Path) -> str | None:
    """None if ``path`` is (or can be made) a writable directory, else the reason it is not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _claims(args) -> int:
    from . import claims as claims_mod

    if not args.out.is_dir():
        print(f"markovformer: error: no results directory {str(args.out)!r}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    try:
        found = claims_mod.collect(args.out, args.chapter)
    except (ArtifactError, ValueError) as exc:
        print(f"markovformer: error: {exc}", file=sys.stderr)
        return 1
    print(claims_mod.report(found, args.format))
    failed = sum(not c.passed for c in found)
    if args.format != "json":
        print(
            f"{len(found)} claims: {len(found) - failed} pass, {failed} fail "
            f"({time.perf_counter() - start:.0f} s)"
        )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.command == "claims":
        return _claims(args)
    if args.command == "list":
        width = max(len(e.id) for e in experiments.all_experiments())
        for e in experiments.all_experiments():
            print(f"{e.id:<{width}}  {e.description}  [default seeds: {e.default_seeds}]")
        return 0

    import matplotlib

    matplotlib.use("Agg")
    exps = _resolve_ids(ap, args.ids)
    if args.command == "reproduce":
        why = _writable_dir(args.out)
        if why is not None:
            print(
                f"markovformer: error: cannot write results to {str(args.out)!r}: {why}",
                file=sys.stderr,
            )
            return 1
    for exp in exps:
        start = time.perf_counter()
        try:
            if args.command == "reproduce":
                print(f"== {exp.id}: {exp.description}", flush=True)
                results, jobs = exp.run(
                    args.out, args.seeds, args.steps, device=args.device,
                    chunk_size=args.chunk_size, progress=not args.quiet,
                    log=lambda m: print(m, flush=True),
                    **({"workers": args.workers} if args.workers > 1 else {}),
                )  # fmt: skip
                fig_path = args.out / "figures" / f"{exp.id}.png"
                _save_figure(exp.figure(results, jobs), fig_path)
                print(f"figure: {fig_path}")
            else:
                results, jobs = exp.load(args.out, args.seeds, args.steps)
        except (ArtifactError, ValueError) as exc:
            print(f"markovformer: error: {exp.id}: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            where = f" {str(exc.filename)!r}" if exc.filename else ""
            print(f"markovformer: error: {exp.id}:{where} {exc.strerror or exc}", file=sys.stderr)
            return 1
        if exp.summary is not None:
            print(json.dumps(exp.summary(results, jobs), indent=1))
        print(f"{exp.id}: done in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
