"""Benchmark eq (19)'s right-hand side by hand (support.core.mlp_curvature) against autodiff (issue #24).

Every ratio is measured in this one run, one thread. For S curves at once, the cost per curve of:
  gradient             torch.func.grad of the loss (vmapped over S)
  autodiff RHS         support.core.monge_metric.geodesic_acceleration, double backward (the book's)
  by hand              MLPRegressionLoss.gradient_and_curvature, then eq (19) (geodesic_acceleration's dispatch)
  ... compiled         the same two through torch.compile (what the paper profile's toy geodesics use)
on three networks: the geodesic benchmark's 1-32-32-1 tanh MLP on 200 points, and chapter 8's and chapter
9's SiLU velocity networks on the paper profile's 4,000 flow-matching pairs. The right-hand side does not
depend on whether the network is trained, so the weights are the initial ones. Each row also prints the
largest relative difference between the two accelerations. Writes _build/benchmarks/mlp_curvature.json.

Usage: python benchmarks/mlp_curvature.py [--sizes 1 2 100]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn
from torch.func import grad, vmap
from torch.utils.benchmark import Timer

from support.core.mlp_curvature import MLPRegressionLoss
from support.core.monge_metric import geodesic_acceleration
from support.core.parameters import parameter_loss
from support.infra.profiles import get_profile
from support.models.flow_matching import VelocityMLP, deterministic_dataset, flow_matching_loss, flow_matching_regression


def networks() -> dict[str, tuple[torch.Tensor, object, MLPRegressionLoss]]:
    """name -> (theta [K], the autodiff loss, the same loss as MLPRegressionLoss)."""
    torch.manual_seed(0)
    out = {}
    x = torch.linspace(-3, 3, 200)[:, None]
    net = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    fused = MLPRegressionLoss.from_sequential(net, x, torch.sin(2 * x))
    theta, loss, _ = parameter_loss(net, lambda f: (f(x) - torch.sin(2 * x)).square().sum(dim=1).mean())
    out["geodesic benchmark, tanh, N = 200"] = (theta, loss, fused)
    paper = get_profile("paper")
    for chapter, dim, sizes in (("8", 1, paper.experiment_1d), ("9", 2, paper.experiment_2d)):
        n_pairs = paper.flow_matching.n_pairs if dim == 1 else sizes.n_pairs
        model = VelocityMLP(dim, paper.flow_matching.hidden if dim == 1 else sizes.hidden)
        data = deterministic_dataset(torch.randn(20, dim), n_pairs, torch.Generator().manual_seed(0))
        theta, loss, _ = parameter_loss(model, lambda f, data=data: flow_matching_loss(f, data))
        fused = flow_matching_regression(model, data)
        out[f"chapter {chapter}, SiLU, N = {n_pairs}"] = (theta, loss, fused)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 100])
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    report = {}
    for name, (theta, loss, fused) in networks().items():
        autodiff = lambda th, v, loss=loss: geodesic_acceleration(loss, th, v, "reverse")
        hand = lambda th, v, fused=fused: geodesic_acceleration(fused, th, v)  # dispatches to the by-hand pass
        print(f"\n{name}, K = {theta.numel()}")
        print("| S | gradient ms/curve | autodiff RHS | by hand | autodiff, compiled | by hand, compiled | "
              "by hand / gradient | autodiff / by hand | compiled: autodiff / by hand | max rel. difference |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for size in args.sizes:
            generator = torch.Generator().manual_seed(size)
            thetas = theta + 0.1 * torch.randn(size, theta.numel(), generator=generator)
            velocities = torch.randn(size, theta.numel(), generator=generator)
            torch._dynamo.reset()  # a fresh compilation for this shape, as the solver's padded batches get
            compiled = {"autodiff": torch.compile(autodiff), "by hand": torch.compile(hand)}
            env = {"grad": grad, "vmap": vmap, "loss": loss, "th": thetas, "v": velocities, "autodiff": autodiff,
                   "hand": hand, "autodiff_c": compiled["autodiff"], "hand_c": compiled["by hand"]}
            for fn in compiled.values():
                fn(thetas, velocities)  # compile outside the timing
            ms = {key: 1e3 * Timer(stmt, globals=env).blocked_autorange(min_run_time=1.0).median / size
                  for key, stmt in (("gradient", "vmap(grad(loss))(th)"), ("autodiff", "autodiff(th, v)"),
                                    ("by hand", "hand(th, v)"), ("autodiff, compiled", "autodiff_c(th, v)"),
                                    ("by hand, compiled", "hand_c(th, v)"))}
            reference = autodiff(thetas, velocities)
            difference = float((hand(thetas, velocities) - reference).abs().max() / reference.abs().max())
            row = {**{f"{key}_ms_per_curve": value for key, value in ms.items()},
                   "by_hand_over_gradient": ms["by hand"] / ms["gradient"],
                   "autodiff_over_by_hand": ms["autodiff"] / ms["by hand"],
                   "compiled_autodiff_over_by_hand": ms["autodiff, compiled"] / ms["by hand, compiled"],
                   "max_relative_difference": difference}
            report.setdefault(name, {})[size] = row
            print(f"| {size} | {ms['gradient']:.3f} | {ms['autodiff']:.3f} | {ms['by hand']:.3f} | "
                  f"{ms['autodiff, compiled']:.3f} | {ms['by hand, compiled']:.3f} | {row['by_hand_over_gradient']:.2f}x | "
                  f"{row['autodiff_over_by_hand']:.2f}x | {row['compiled_autodiff_over_by_hand']:.2f}x | {difference:.1e} |",
                  flush=True)
    out = Path("_build/benchmarks/mlp_curvature.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
