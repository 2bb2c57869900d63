"""Benchmark: seconds per training step per run, against the causal attention floor.

At the L2G Fig. 4 settings (d = 8, N = 1024, B = 16) this prints, in one process:

* the machine (CPU model, cores, torch's kernel capability): every time below is this machine's;
* the forward+backward time of causal ``scaled_dot_product_attention`` for the same shapes
  (one head of dimension d over B sequences of length N): the floor for one run;
* the time of one full training step (sampling, forward, backward, AdamW, exact-loss logging)
  for R = 1 and R = 8 runs batched, and the time per run, on one torch thread, as the engine
  trains every run (``markovformer.experiments.base.run_specs``);
* the ratio step(R = 1) / floor, the machine-independent figure (target <= 1.2);
* the same step and floor while another process keeps one core busy (a Python busy loop), and
  the ratio busy step / quiet step (target <= 2);
* for comparison, the step and floor on torch's default number of threads;
* on CUDA (``--device cuda``), also time(R = 64) / time(R = 1) (target <= 2).

    python benchmarks/train_step.py [--device cpu|cuda] [--steps 10] [--no-busy]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import torch
import torch.nn.functional as F

from markovformer.artifacts import machine_text
from markovformer.markov import BinaryChain
from markovformer.model import TransformerConfig
from markovformer.train import TrainConfig, train


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def sdpa_floor(d: int, N: int, B: int, device: str, repeats: int) -> float:
    shape = (B, 1, N, d)
    q, k, v = (torch.randn(shape, device=device, requires_grad=True) for _ in range(3))

    def once() -> None:
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()

    for _ in range(3):
        once()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def step_time(R: int, steps: int, device: str, precision: str = "float32") -> float:
    """Best of two trainings of `steps` steps (the first step of each excluded)."""
    opts = () if precision == "float32" else (("precision", precision),)
    cfg = TransformerConfig(d=8, seq_len=1024, kernel_options=opts)
    chains = [BinaryChain(0.5, 0.8)] * R
    best = float("inf")
    for _ in range(2):
        stamps: list[float] = []

        def tick(step, model, metrics, stamps=stamps):
            sync(device)
            stamps.append(time.perf_counter())

        train(cfg, TrainConfig(steps=steps + 1, batch_size=16), list(range(R)), chains,
              device=device, callback=tick)  # fmt: skip
        gaps = sorted(b - a for a, b in zip(stamps, stamps[1:], strict=False))
        best = min(best, gaps[len(gaps) // 2])  # median step of the run
    return best


def _spin() -> None:
    while True:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-busy", action="store_true", help="skip the busy-core measurement")
    args = ap.parse_args()
    dev = args.device
    default_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, device {dev}, machine: {machine_text()}")
    if dev == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
        floor = sdpa_floor(8, 1024, 16, dev, repeats=max(5, args.steps))
        t1, t64 = step_time(1, args.steps, dev), step_time(64, args.steps, dev)
        print(f"causal SDPA fwd+bwd (B=16, N=1024, d=8): {floor:.4f} s  (floor for one run)")
        print(f"training step, R = 1 : {t1:.4f} s;  step(R=1) / floor: {t1 / floor:.2f}")
        print(f"training step, R = 64: {t64:.4f} s  ({t64 / 64:.5f} s per run)")
        print(f"time(R=64) / time(R=1): {t64 / t1:.2f}  (target <= 2)")
        for prec in ("bfloat16",):
            b1, b64 = step_time(1, args.steps, dev, prec), step_time(64, args.steps, dev, prec)
            print(
                f"attention in {prec}: R = 1 {b1:.4f} s, R = 64 {b64:.4f} s, ratio {b64 / b1:.2f}"
            )
        return
    torch.set_num_threads(1)  # the engine trains every run on one thread
    floor = sdpa_floor(8, 1024, 16, dev, repeats=max(5, args.steps))
    t1 = step_time(1, args.steps, dev)
    t8 = step_time(8, args.steps, dev)
    print("one torch thread per run (the engine):")
    print(f"  causal SDPA fwd+bwd (B=16, N=1024, d=8): {floor:.4f} s  (floor for one run)")
    print(f"  training step, R = 1 : {t1:.4f} s  ({t1:.4f} s per run)")
    print(f"  training step, R = 8 : {t8:.4f} s  ({t8 / 8:.4f} s per run)")
    print(f"  step(R=1) / floor    : {t1 / floor:.2f}  (target <= 1.2)")
    if not args.no_busy:
        spinner = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
        spinner.start()
        try:
            time.sleep(0.5)
            busy_floor = sdpa_floor(8, 1024, 16, dev, repeats=max(5, args.steps))
            busy = step_time(1, args.steps, dev)
        finally:
            spinner.terminate()
            spinner.join()
        print("  with one core kept busy by another process:")
        print(f"    floor {busy_floor:.4f} s, step(R=1) {busy:.4f} s, step / floor "
              f"{busy / busy_floor:.2f}")  # fmt: skip
        print(f"    busy step / quiet step: {busy / t1:.2f}  (target <= 2)")
    torch.set_num_threads(default_threads)
    if default_threads > 1:
        floor_n = sdpa_floor(8, 1024, 16, dev, repeats=max(5, args.steps))
        tn = step_time(1, args.steps, dev)
        print(f"torch's default {default_threads} threads (for comparison):")
        print(f"  floor {floor_n:.4f} s, step(R=1) {tn:.4f} s, step / floor {tn / floor_n:.2f}")


if __name__ == "__main__":
    main()
