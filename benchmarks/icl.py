"""Benchmark of chapter 8: training throughput of the in-context model, and the time of
``markovformer reproduce`` for every chapter-8 id.

At the chapter's ICL-MC settings (S = 3, k = 1, N = 100, batch 32, d = 16, two layers with MLP and
pre-LN; see ``markovformer.experiments.icl``) this prints, in one process:

* the median time of one training step (sampling from the prior, forward, backward, AdamW, exact
  and Bayes losses) for R = 1 and R = 8 runs batched, and the throughput in tokens per second per
  run (tokens = batch x N predictions per step);
* with ``--reproduce DIR``, the wall time of ``markovformer reproduce`` for every chapter-8 id
  (``--out DIR --workers W``) in a fresh process (DIR should be empty: stored runs are not
  recomputed). The target is 30 minutes on a 2-core CPU; ``--workers 2`` trains two chunks at once.

One torch thread is the fast setting here: with two threads per process, the small operations of
these models spend their time synchronising (measured: several times slower on a busy 2-core CPU).

    python benchmarks/icl.py [--steps 20] [--threads 1] [--reproduce /tmp/icl-bench --workers 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from markovformer.experiments.icl import BATCH, ICL_N, ICL_PRIOR, LR, icl_config
from markovformer.train import TrainConfig, train

CHAPTER_IDS = ("icl-mc", "icl-stages", "icl-heads", "icl-ablation", "icl-order")


def step_time(R: int, steps: int, depth: int = 2) -> float:
    """Median step time of a training of ``steps + 1`` steps (first step excluded), best of 2."""
    cfg = icl_config(depth)
    tc = TrainConfig(steps=steps + 1, batch_size=BATCH, lr=LR, schedule="constant",
                     weight_decay=0.0)  # fmt: skip
    best = float("inf")
    for _ in range(2):
        stamps: list[float] = []

        def tick(step, model, metrics, stamps=stamps):
            stamps.append(time.perf_counter())

        train(cfg, tc, list(range(R)), ICL_PRIOR, callback=tick)
        gaps = sorted(b - a for a, b in zip(stamps, stamps[1:], strict=False))
        best = min(best, gaps[len(gaps) // 2])
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--reproduce", type=Path, default=None, help="also time reproduce into DIR")
    ap.add_argument("--workers", type=int, default=1, help="worker processes for reproduce")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    tokens = BATCH * ICL_N
    print(f"ICL-MC model: d = 16, 2 layers, MLP, pre-LN; S = 3, N = {ICL_N}, batch {BATCH}")
    for R in (1, 8):
        t = step_time(R, args.steps)
        print(f"R = {R}: {1e3 * t:7.1f} ms per step, {1e3 * t / R:6.1f} ms per run-step, "
              f"{tokens * R / t:9.0f} tokens/s in all, {tokens / t:8.0f} tokens/s per run")  # fmt: skip
    if args.reproduce is not None:
        cmd = [sys.executable, "-m", "markovformer.cli", "reproduce", *CHAPTER_IDS,
               "--out", str(args.reproduce), "--quiet", "--workers", str(args.workers)]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        print(f"markovformer reproduce {' '.join(CHAPTER_IDS)} --workers {args.workers}: "
              f"{wall / 60:.1f} min (target 30 min)")  # fmt: skip


if __name__ == "__main__":
    main()
