"""Benchmark the Laplace machinery (issue: Laplace approximations at scale). Prints figures from one run.

1. Lanczos with full re-orthogonalisation, k = 1000 on K = 3,584 (the size of the DDPM CIFAR-10
   U-Net's first convolution, App. D) with a cheap synthetic HVP (a low-rank-plus-diagonal
   matrix): time per iteration and the share spent in re-orthogonalisation.
2. Generating from an ensemble of S small MLPs (2 -> 64 -> 64 -> 1 velocity nets, i.e. D = 1)
   x N particles x 100 Euler steps: one vmapped solve vs a Python loop over models. The loop is
   timed on ``--loop-models`` models and scaled to S. Run at N and at N / 10 particles.

Usage: python benchmarks/laplace.py [--k 1000] [--dim 3584] [--models 1000] [--particles 1000] [--loop-models 50]
"""

from __future__ import annotations

import argparse
import time

import torch

from support.core.lanczos import lanczos
from support.core.parameters import flatten, functional_forward, select_parameters
from support.models.ensembles import generate_ensemble
from support.models.flow_matching import VelocityMLP, generate


def bench_lanczos(dim: int, k: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    low_rank = torch.randn(dim, 20, generator=g, dtype=torch.float64).to(device)
    diag = torch.rand(dim, generator=g, dtype=torch.float64).to(device) * 1e-3
    hvp = lambda v: low_rank @ (low_rank.T @ v) + diag * v

    start = time.perf_counter()
    values, _ = lanczos(hvp, dim, k, generator=g, device=device, breakdown_tol=0.0)
    total = time.perf_counter() - start
    # Time the re-orthogonalisation alone: the same two projections on a k x dim basis.
    basis = torch.linalg.qr(torch.randn(dim, k, dtype=torch.float64, device=device))[0].T.contiguous()
    w = torch.randn(dim, dtype=torch.float64, device=device)
    start = time.perf_counter()
    for j in range(k):
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
    reorth = time.perf_counter() - start
    print(f"[lanczos] K = {dim}, k = {k}, {device}: {total:.1f} s in all, {1e3 * total / k:.2f} ms per iteration; "
          f"re-orthogonalisation alone {reorth:.1f} s ({100 * reorth / total:.0f}% of the run); "
          f"returned {len(values)} Ritz pairs")


def bench_ensemble(models: int, particles: int, loop_models: int, device: torch.device) -> None:
    torch.manual_seed(0)
    model = VelocityMLP(dim=1, hidden=(64, 64)).to(device=device, dtype=torch.float32)
    layout = select_parameters(model)
    theta = flatten(model, layout)
    thetas = theta + 0.01 * torch.randn(models, layout.dim, device=device)
    x0 = torch.randn(particles, 1, device=device)
    start = time.perf_counter()
    for s in range(loop_models):
        single = generate(functional_forward(model, layout, thetas[s]), x0, method="euler", steps=100)
    t_loop = (time.perf_counter() - start) * models / loop_models
    print(f"[ensemble] S = {models} models x N = {particles} particles x 100 Euler steps, {device}: "
          f"loop over models (timed on {loop_models}, scaled) {t_loop:.1f} s")
    for per_solve in (16384, None):
        start = time.perf_counter()
        batched = generate_ensemble(model, layout, thetas, x0, particles_per_solve=per_solve, method="euler", steps=100)
        t_batched = time.perf_counter() - start
        assert torch.allclose(single, batched[loop_models - 1], atol=1e-4)
        print(f"[ensemble]   vmapped, particles_per_solve = {per_solve}: {t_batched:.1f} s, "
              f"speed-up over the loop {t_loop / t_batched:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=3584)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--particles", type=int, default=1000)
    parser.add_argument("--loop-models", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    bench_lanczos(args.dim, args.k, device)
    bench_ensemble(args.models, args.particles, args.loop_models, device)
    bench_ensemble(args.models, args.particles // 10, args.loop_models, device)


if __name__ == "__main__":
    main()
