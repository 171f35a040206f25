"""Benchmark the geodesic machinery (issue: loss-manifold geometry). Prints ratios from one run.

1. Batched ``exp_map`` for S curves in one solve vs a Python loop of single-curve solves. The loop
   is timed on the first ``--loop-samples`` curves and scaled to S (a full loop takes too long).
2. Cost of one geodesic right-hand side (eq 19: gradient + HVP in one pass) vs one gradient, on the
   1D flow-matching network of Sec. 5.1 (K = 1185 parameters), forward- and reverse-mode HVPs.

Usage: python benchmarks/geodesics.py [--samples 1000] [--loop-samples 50] [--device cpu|cuda] [--hvp reverse]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.func import grad
from torch.utils.benchmark import Timer

from support.core.geodesics import solve_geodesics
from support.core.monge_metric import geodesic_acceleration
from support.core.parameters import parameter_loss
from support.experiments.toy_1d import fit_memorising_flow_1d, small_network_loss
from support.infra.profiles import get_profile
from support.models.flow_matching import flow_matching_loss


def batched_vs_loop(samples: int, loop_samples: int, hvp: str, generator: torch.Generator) -> None:
    theta_star, loss = small_network_loss(generator)
    v = 0.3 * torch.randn(samples, theta_star.numel(), generator=generator)
    timings = {}
    for label, chunk in [("one batch", None), ("chunks of 100", 100)]:
        start = time.perf_counter()
        solution = solve_geodesics(loss, theta_star, v, hvp=hvp, chunk_size=chunk)
        timings[label] = time.perf_counter() - start
        print(f"[exp_map] K = {theta_star.numel()}, S = {samples}, {label}: {timings[label]:.1f} s, "
              f"evaluations per batch {sorted(set(solution.nfe.tolist()))}")
    start = time.perf_counter()
    loop_nfe = 0
    for row in v[:loop_samples]:
        loop_nfe += int(solve_geodesics(loss, theta_star, row, hvp=hvp).nfe[0])
    t_loop = (time.perf_counter() - start) * samples / loop_samples
    print(f"[exp_map] loop of single-curve solves (timed on {loop_samples}, scaled to {samples}): {t_loop:.1f} s, "
          f"mean {loop_nfe / loop_samples:.0f} evaluations per curve")
    for label, seconds in timings.items():
        print(f"[exp_map] speed-up over the loop, {label}: {t_loop / seconds:.1f}x")


def rhs_vs_gradient(device: torch.device, generator: torch.Generator) -> None:
    profile = get_profile("smoke")
    problem = fit_memorising_flow_1d(profile, generator, progress=False)
    problem.model.to(device)
    data = type(problem.data)(t=problem.data.t.to(device), x0=problem.data.x0.to(device), x1=problem.data.x1.to(device))
    theta, loss, _ = parameter_loss(problem.model, lambda f: flow_matching_loss(f, data))
    velocity = torch.randn(theta.numel(), generator=generator).to(device)
    g = grad(loss)
    env = {"g": g, "theta": theta, "v": velocity, "acc": geodesic_acceleration, "loss": loss}
    t_grad = Timer("g(theta)", globals=env).blocked_autorange(min_run_time=2).median
    t_fwd = Timer("acc(loss, theta, v, mode='forward')", globals=env).blocked_autorange(min_run_time=2).median
    t_rev = Timer("acc(loss, theta, v, mode='reverse')", globals=env).blocked_autorange(min_run_time=2).median
    print(f"[rhs] K = {theta.numel()}, {len(data)} data pairs, {device}: gradient {1e3 * t_grad:.2f} ms, "
          f"eq (19) forward-over-reverse {1e3 * t_fwd:.2f} ms ({t_fwd / t_grad:.2f}x), "
          f"reverse-over-reverse {1e3 * t_rev:.2f} ms ({t_rev / t_grad:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--loop-samples", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hvp", choices=["forward", "reverse"], default="reverse")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    generator = torch.Generator().manual_seed(0)
    rhs_vs_gradient(torch.device(args.device), generator)
    batched_vs_loop(args.samples, args.loop_samples, args.hvp, generator)


if __name__ == "__main__":
    main()
