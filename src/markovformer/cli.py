"""The ``markovformer`` command line.

    markovformer list
    markovformer reproduce ID [ID ...] [--seeds N] [--steps N] [--device cpu|cuda] [--out DIR]
                           [--workers N] [--scheduler ADDRESS] [--chunk-size N] [--dry-run]
    markovformer report ID [ID ...] [--seeds N] [--steps N] [--out DIR]
    markovformer verify ID [ID ...] [--all] [--out DIR] [--workers N] [--scheduler ADDRESS]
    markovformer check [--out DIR] [--fix]
    markovformer claims [--out DIR] [--chapter N ...] [--format text|markdown|json]

``reproduce`` runs at the papers' settings unless told otherwise, shows progress, stores every run
under ``DIR`` (resuming whatever is already there) and writes the figure to
``DIR/figures/ID.png``; ``--dry-run`` only says what is missing and what it would cost here.
``report`` prints the summary of stored results without training. ``verify`` trains a stored
subset again and compares (see :mod:`markovformer.verify`). ``check`` lists every problem of a
results directory; ``--fix`` drops what cannot be trusted. ``ID`` may be ``all``. ``claims``
evaluates every claim the book asserts on the stored results (default ``book/data``) and prints
one row per claim; it exits with 1 if any fails.

Every error is one line naming what is wrong (exit 1; 2 for a bad argument); Ctrl-C ends in one
line saying that every finished chunk is kept (exit 130).
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
from .artifacts import ArtifactError, RootLock, atomic_write

BOOK_DATA = Path("book/data")


def _bounded(limit: int):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a positive integer, got {value!r}"
            ) from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
        if n > limit:
            raise argparse.ArgumentTypeError(f"expected at most {limit:,}, got {value!r}")
        return n

    return parse


_positive = _bounded(10**9)


def _out_dir(value: str) -> Path:
    if not value.strip():
        raise argparse.ArgumentTypeError("expected a directory, got an empty path")
    return Path(value)


def _default_workers() -> int:
    from .artifacts import usable_cores

    return usable_cores()


def build_parser() -> argparse.ArgumentParser:
    from .experiments.base import MAX_SEEDS, MAX_STEPS

    ap = argparse.ArgumentParser(
        prog="markovformer",
        description="Reproduce the figures of the markovformer book.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the reproducible figure ids")

    def engine(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--workers", type=_bounded(1024), default=None,
            help="processes training chunks at once: 1 trains in this process; N > 1 starts a "
            "Dask LocalCluster of N single-threaded workers (default: this machine's cores)",
        )  # fmt: skip
        p.add_argument(
            "--scheduler", default=None, metavar="ADDRESS",
            help="send the chunks to an existing Dask cluster (e.g. tcp://host:8786); "
            "default: $DASK_SCHEDULER_ADDRESS if set",
        )  # fmt: skip

    for name, helptext in (
        ("reproduce", "compute missing runs and draw the figures"),
        ("report", "print the summary of stored results (no training)"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument(
            "ids", nargs="+", metavar="ID", help="figure ids (see `markovformer list`) or 'all'"
        )
        p.add_argument(
            "--seeds", type=_bounded(MAX_SEEDS), default=None, help="seeds per configuration"
        )
        p.add_argument(
            "--steps", type=_bounded(MAX_STEPS), default=None,
            help="training steps (default: paper)",
        )  # fmt: skip
        p.add_argument(
            "--out", type=_out_dir, default=Path("runs"), help="results directory (default: runs)"
        )
        if name == "reproduce":
            p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
            p.add_argument(
                "--chunk-size", type=_bounded(100_000), default=None,
                help="runs per batched program (default 16 on CPU, 256 on CUDA)",
            )  # fmt: skip
            p.add_argument("--quiet", action="store_true", help="no progress bars")
            p.add_argument(
                "--dry-run", action="store_true",
                help="only say what is missing and estimate its time on this machine",
            )  # fmt: skip
            engine(p)
    v = sub.add_parser("verify", help="train stored runs again and compare with the artifacts")
    v.add_argument("ids", nargs="+", metavar="ID", help="figure ids or 'all'")
    v.add_argument(
        "--all", action="store_true", dest="all_seeds",
        help="every stored run (default: one seed of every configuration)",
    )  # fmt: skip
    v.add_argument("--out", type=_out_dir, default=BOOK_DATA, help="default: book/data")
    v.add_argument(
        "--save", type=_out_dir, default=None, metavar="DIR",
        help="also write what was found, with this machine, to DIR/ID.json",
    )  # fmt: skip
    engine(v)
    k = sub.add_parser("check", help="list every problem of a results directory")
    k.add_argument("--out", type=_out_dir, default=BOOK_DATA, help="default: book/data")
    k.add_argument("--fix", action="store_true", help="drop what cannot be trusted")
    c = sub.add_parser("claims", help="check every claim of the book on the stored results")
    c.add_argument("--out", type=_out_dir, default=BOOK_DATA, help="default: book/data")
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


def _error(msg: str) -> int:
    print(f"markovformer: error: {msg}", file=sys.stderr)
    return 1


def _claims(args) -> int:
    from . import claims as claims_mod

    if not args.out.is_dir():
        return _error(f"no results directory {str(args.out)!r}")
    if args.chapter is not None:
        known = sorted({ch for ch, _, _ in claims_mod.registered()})
        unknown = [ch for ch in args.chapter if ch not in known]
        if unknown:
            return _error(
                f"no claims for chapter(s) {', '.join(map(str, unknown))}; "
                f"chapters with claims: {', '.join(map(str, known))}"
            )
    start = time.perf_counter()
    try:
        found = claims_mod.collect(args.out, args.chapter)
    except (ArtifactError, ValueError) as exc:
        return _error(str(exc))
    print(claims_mod.report(found, args.format))
    failed = sum(not c.passed for c in found)
    if args.format != "json":
        print(
            f"{len(found)} claims: {len(found) - failed} pass, {failed} fail "
            f"({time.perf_counter() - start:.0f} s)"
        )
    return 1 if failed else 0


def _check(args) -> int:
    from .artifacts import check_store

    try:
        with RootLock(args.out, lambda m: print(m, flush=True)) if args.fix else _nothing():
            problems = check_store(args.out, fix=args.fix)
    except ArtifactError as exc:
        return _error(str(exc))
    for line in problems:
        print(line)
    n = len(list(args.out.glob("*/*/manifest.json")))
    verdict = "fixed" if args.fix and problems else "found"
    print(f"{n} result directories checked: {len(problems)} problem(s) {verdict}")
    return 0 if not problems or args.fix else 1


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _workers(args) -> int:
    return args.workers if args.workers is not None else _default_workers()


def _dry_run(exps, args) -> int:
    from .artifacts import machine_text
    from .experiments.cost import estimate_jobs, schedule_seconds

    workers = _workers(args)
    print(f"dry run on {machine_text()}: what is missing under {args.out} and its cost here")
    seen, total_chunks, total_runs, unknown = set(), [], 0, 0
    for exp in exps:
        jobs = exp.jobs(args.seeds, args.steps)
        fresh = []
        for job, seeds in jobs:  # runs shared with an id listed before count once
            store_dir = job.store(args.out).dir
            left = [s for s in seeds if (store_dir, s) not in seen]
            seen.update((store_dir, s) for s in seeds)
            if left:
                fresh.append((job, left))
        est = estimate_jobs(fresh, args.out, args.chunk_size or 16)
        total_chunks += est.chunks
        total_runs += est.runs
        unknown += est.unknown
        if not jobs:
            what = "computed when drawn"
        elif est.runs == 0:
            what = "complete"
        else:
            wall = schedule_seconds(est.chunks, workers)
            what = f"{est.runs} run(s) missing, about {_duration(wall)} with {workers} worker(s)"
            what += f" ({est.unknown} not estimated)" if est.unknown else ""
        print(f"  {exp.id:<14} {what}", flush=True)
    wall = schedule_seconds(total_chunks, workers)
    print(
        f"total: {total_runs} run(s) missing, about {_duration(wall)} with {workers} worker(s), "
        f"{_duration(sum(total_chunks))} on one"
        + (f" ({unknown} not estimated)" if unknown else "")
    )
    if workers > 1:
        print("(timed on one otherwise idle core: a lower bound for several workers, which slow "
              "each other down on a machine whose cores share caches or hyperthreads)")  # fmt: skip
    return 0


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _verify(exps, args) -> int:
    from .verify import verify

    failed = 0
    for exp in exps:
        if not exp.jobs(None, None):
            if len(exps) == 1:
                return _error(f"{exp.id} stores no runs (computed when drawn): nothing to verify")
            continue
        try:
            verdict = verify(exp, args.out, all_seeds=args.all_seeds, workers=_workers(args),
                             scheduler=args.scheduler, log=None)  # fmt: skip
        except (ArtifactError, ValueError) as exc:
            return _error(f"{exp.id}: {exc}")
        for line in verdict.lines():
            print(line, flush=True)
        if args.save is not None:
            path = args.save / f"{exp.id}.json"
            atomic_write(path, json.dumps(verdict.to_dict(), indent=1, default=float).encode())
            print(f"saved: {path}")
        failed += not verdict.ok
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return _main(ap, args)
    except KeyboardInterrupt:
        print(
            "\nmarkovformer: interrupted; every finished chunk is stored, "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130


def _main(ap: argparse.ArgumentParser, args) -> int:
    if args.command == "claims":
        return _claims(args)
    if args.command == "check":
        return _check(args)
    if args.command == "list":
        width = max(len(e.id) for e in experiments.all_experiments())
        for e in experiments.all_experiments():
            print(f"{e.id:<{width}}  {e.description}  [default seeds: {e.default_seeds}]")
        return 0

    import matplotlib

    matplotlib.use("Agg")
    exps = _resolve_ids(ap, args.ids)
    if args.command == "verify":
        return _verify(exps, args)
    if args.command == "reproduce" and args.dry_run:
        try:
            return _dry_run(exps, args)
        except (ArtifactError, ValueError) as exc:
            return _error(str(exc))
    if args.command == "reproduce":
        why = _writable_dir(args.out)
        if why is not None:
            return _error(f"cannot write results to {str(args.out)!r}: {why}")
        say = lambda m: print(m, flush=True)  # noqa: E731
        try:
            with RootLock(args.out, say):
                return _run(exps, args, say)
        except OSError as exc:
            return _error(exc.strerror or str(exc))
    return _run(exps, args, None)


def _run(exps, args, say) -> int:
    for exp in exps:
        start = time.perf_counter()
        try:
            if args.command == "reproduce":
                print(f"== {exp.id}: {exp.description}", flush=True)
                workers = _workers(args)
                results, jobs = exp.run(
                    args.out, args.seeds, args.steps, device=args.device,
                    chunk_size=args.chunk_size, progress=not args.quiet, log=say,
                    **({"workers": workers} if workers > 1 else {}),
                    **({"scheduler": args.scheduler} if args.scheduler else {}),
                )  # fmt: skip
                fig_path = args.out / "figures" / f"{exp.id}.png"
                _save_figure(exp.figure(results, jobs), fig_path)
                print(f"figure: {fig_path}")
            else:
                results, jobs = exp.load(args.out, args.seeds, args.steps)
        except (ArtifactError, ValueError) as exc:
            return _error(f"{exp.id}: {exc}")
        except OSError as exc:
            where = f" {str(exc.filename)!r}" if exc.filename else ""
            return _error(f"{exp.id}:{where} {exc.strerror or exc}")
        if exp.summary is not None:
            print(json.dumps(exp.summary(results, jobs), indent=1))
        print(f"{exp.id}: done in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
