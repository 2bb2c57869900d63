"""Benchmark: vectorised binary-chain sampler vs a per-position multinomial loop.

Prints tokens/s of ``BinaryChain.sample`` and of the straightforward loop that draws one position
at a time with ``torch.multinomial`` (the way the authors' code samples), at batch 16 x length
1024, and their ratio (target >= 100).

    python benchmarks/sampler.py [--batch 16] [--length 1024] [--p 0.5] [--q 0.8]
"""

from __future__ import annotations

import argparse
import time

import torch

from markovformer.markov import BinaryChain


def loop_sampler(chain: BinaryChain, batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """Reference: one torch.multinomial call per position."""
    kernel = torch.tensor(chain.kernel, dtype=torch.float32)
    pi = torch.tensor(chain.stationary, dtype=torch.float32)
    x = torch.empty(batch, length, dtype=torch.long)
    x[:, 0] = torch.multinomial(pi, batch, replacement=True, generator=gen)
    for n in range(1, length):
        x[:, n] = torch.multinomial(kernel[x[:, n - 1]], 1, generator=gen).squeeze(1)
    return x


def best_time(fn, repeats: int, min_seconds: float = 0.5) -> float:
    """Best mean over `repeats` rounds, each round running fn for at least min_seconds."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / n)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--p", type=float, default=0.5)
    ap.add_argument("--q", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    chain = BinaryChain(args.p, args.q)
    gen = torch.Generator().manual_seed(0)
    tokens = args.batch * args.length
    t_vec = best_time(lambda: chain.sample(args.batch, args.length, generator=gen), args.repeats)
    t_loop = best_time(lambda: loop_sampler(chain, args.batch, args.length, gen), args.repeats)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"chain {chain}, batch {args.batch} x length {args.length}")
    print(f"vectorised BinaryChain.sample : {t_vec * 1e3:8.3f} ms  {tokens / t_vec:12.3e} tokens/s")
    print(
        f"per-position multinomial loop : {t_loop * 1e3:8.3f} ms  {tokens / t_loop:12.3e} tokens/s"
    )
    print(f"speed-up ratio                : {t_loop / t_vec:8.1f} x  (target >= 100)")


if __name__ == "__main__":
    main()
