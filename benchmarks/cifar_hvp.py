"""Benchmark Hessian-vector products through the CIFAR-10 U-Net w.r.t. ``conv_in`` (App. D.2-D.3).

Times, on one fixed batch of the DDPM loss (App. D.3): one gradient, one HVP by reverse-over-
reverse (double backward, ``vjp(grad)``), the same with the gradient's graph built once and
reused (what Lanczos does at a fixed theta: ``hessian_vector_product(..., "reverse")``), one HVP by
forward-over-reverse (``jvp(grad)``), and one geodesic right-hand side (eq 19: gradient and HVP in one pass). The target is an HVP within 3x
of a gradient. Images are random stand-ins: the cost does not depend on the pixels.

Usage: python benchmarks/cifar_hvp.py [--config smoke|paper] [--batch 64] [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.func import grad, jvp, vjp

from support.cifar_unet import build_unet, ddpm_scheduler, draw_fixed_batch, fixed_batch_loss, unet_config
from support.laplace import hessian_vector_product
from support.monge_metric import geodesic_acceleration


def seconds(function, repeats: int, device: torch.device) -> float:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["smoke", "paper"], default="smoke")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    unet = build_unet(unet_config("ddpm-cifar10-32" if args.config == "paper" else "smoke")).to(device)
    generator = torch.Generator().manual_seed(1)
    images = (torch.rand(args.batch, 3, 32, 32, generator=generator) * 2 - 1).to(device)
    theta, loss, layout = fixed_batch_loss(unet, draw_fixed_batch(images, ddpm_scheduler(), generator), ddpm_scheduler())
    v = torch.randn(theta.shape, generator=generator).to(device)
    print(f"{args.config} U-Net ({sum(p.numel() for p in unet.parameters()):,} parameters), K = {layout.dim} "
          f"(conv_in), batch {args.batch}, {device}, {torch.get_num_threads()} threads")
    timings = {"loss": seconds(lambda: loss(theta), args.repeats, device),
               "gradient": seconds(lambda: grad(loss)(theta), args.repeats, device),
               "HVP, double backward": seconds(lambda: vjp(grad(loss), theta)[1](v), args.repeats, device)}
    cached = hessian_vector_product(loss, theta, "reverse")
    timings["HVP, cached graph"] = seconds(lambda: cached(v), args.repeats, device)
    try:
        timings["HVP, jvp of grad"] = seconds(lambda: jvp(grad(loss), (theta,), (v,)), args.repeats, device)
    except RuntimeError as error:  # report, do not hide, a forward-mode failure
        print(f"jvp of grad failed: {str(error).splitlines()[0]}")
    for mode in ("reverse", "forward"):
        try:
            timings[f"geodesic RHS ({mode})"] = seconds(lambda: geodesic_acceleration(loss, theta, v, mode),
                                                        args.repeats, device)
        except RuntimeError as error:
            print(f"geodesic RHS ({mode}) failed: {str(error).splitlines()[0]}")
    for name, value in timings.items():
        print(f"{name:>26}: {value:8.3f} s  ({value / timings['gradient']:.2f} x gradient)")


if __name__ == "__main__":
    main()
