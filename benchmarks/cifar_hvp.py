"""Benchmark Hessian-vector products through the CIFAR-10 U-Net w.r.t. ``conv_in`` (App. D.2-D.3).

Times, on one fixed batch of the DDPM loss (App. D.3): one gradient; one HVP by reverse-over-
reverse (double backward, ``vjp(grad)``, the gradient's graph rebuilt every time); the same with
the graph built once and reused (what Lanczos does at a fixed theta,
``hessian_vector_product(..., "reverse")``; whole batch only); one HVP by forward-over-reverse
(``jvp(grad)``); and one geodesic right-hand side (eq 19: gradient and HVP in one pass) in both
modes. The target is an HVP within 3x of a gradient. ``--micro-batch m`` splits the batch into
parts of m images (a ``SummedLoss``: same numbers, the memory of one part). Images are random
stand-ins: the cost does not depend on the pixels. Peak memory is the process's maximum RSS
(CPU) or the CUDA allocator's peak, reset before every entry.

Usage: python benchmarks/cifar_hvp.py [--config smoke|paper] [--batch 64] [--micro-batch M]
                                      [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import torch

from support.core.laplace import hessian_vector_product
from support.core.monge_metric import SummedLoss, geodesic_acceleration, gradient_and_hvp, loss_gradient
from support.models.cifar_unet import build_unet, ddpm_scheduler, draw_fixed_batch, fixed_batch_loss, unet_config


def seconds(function: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call."""
    function()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def peak_gb(device: torch.device) -> float:
    """CUDA: the allocator's peak since the last reset; CPU: the process's maximum RSS so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["smoke", "paper"], default="smoke")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--micro-batch", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    unet = build_unet(unet_config("ddpm-cifar10-32" if args.config == "paper" else "smoke")).to(device)
    generator = torch.Generator().manual_seed(1)
    images = (torch.rand(args.batch, 3, 32, 32, generator=generator) * 2 - 1).to(device)
    theta, loss, layout = fixed_batch_loss(unet, draw_fixed_batch(images, ddpm_scheduler(), generator), ddpm_scheduler(),
                                           micro_batch=args.micro_batch)
    v = torch.randn(theta.shape, generator=generator).to(device)
    parts = f"in parts of {args.micro_batch}" if isinstance(loss, SummedLoss) else "whole"
    print(f"{args.config} U-Net ({sum(p.numel() for p in unet.parameters()):,} parameters), K = {layout.dim} "
          f"(conv_in), batch {args.batch} {parts}, {device}, {torch.get_num_threads()} threads")
    timings: dict[str, tuple[float, float]] = {}

    def measure(name: str, function: Callable[[], object]) -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            timings[name] = seconds(function, args.repeats, device), peak_gb(device)
        except RuntimeError as error:  # report, do not hide, a forward-mode failure
            print(f"{name} failed: {str(error).splitlines()[0]}")

    measure("loss", lambda: loss(theta))
    measure("gradient", lambda: loss_gradient(loss, theta))
    measure("HVP, double backward", lambda: gradient_and_hvp(loss, theta, v, "reverse"))
    if not isinstance(loss, SummedLoss):  # a SummedLoss keeps no graph: the entry above is its reverse mode
        cached = hessian_vector_product(loss, theta, "reverse")
        measure("HVP, cached graph", lambda: cached(v))
        del cached  # free the graph before the next entries
    measure("HVP, jvp of grad", lambda: gradient_and_hvp(loss, theta, v, "forward"))
    for mode in ("reverse", "forward"):
        measure(f"geodesic RHS ({mode})", lambda: geodesic_acceleration(loss, theta, v, mode))
    for name, (value, peak) in timings.items():
        print(f"{name:>24}: {value:8.3f} s  ({value / timings['gradient'][0]:.2f} x gradient), peak {peak:.1f} GB")


if __name__ == "__main__":
    main()
