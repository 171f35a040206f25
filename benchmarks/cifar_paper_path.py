"""Run chapter 12's paper-profile code path at full size on the CPU, with truncated iteration counts.

The paper profile (Sec. 5.2, App. D; Algorithm 2) needs a GPU for its iteration counts: on a
2-core CPU one Hessian-vector product of the full U-Net at batch 64 costs about 20 s, so
k = 1000 Lanczos steps per batch alone would take most of a working day, five batches more than a day. What a CPU *can* check is that
every stage runs at the paper's sizes, with the paper's shapes and memory, on the same functions
the chapter calls:

- data: N = 1000 images of 3 x 32 x 32 in [-1, 1] (the bundled digits stand-in; ``cifar10`` when
  the archive is in place) and held-out images for the selection score;
- the ddpm-cifar10-32 U-Net (35,746,307 parameters, conv_in 3,584) trained for ``--epochs`` epochs at
  batch 128 with an atomic checkpoint, then resumed (a second call must not train again);
- B = 5 fixed Hessian batches of 64 images; ``--hvp-steps`` real Lanczos steps on batch 1 with the
  reverse-mode HVP (App. D.2; the graph cached, or part by part with ``--micro-batch``), timed per
  product, against one gradient;
- one geodesic right-hand side (eq 19) at batch 64;
- Lanczos with the paper's k = 1000 and full re-orthogonalisation at K = 3,584 in float32, on a
  dense synthetic symmetric operator with a Hessian-like spectrum whose eigenvalues are known
  (the real operator is too slow here for k = 1000): Ritz values against ``eigvalsh``;
- generation: θ* and Euclidean perturbations from the truncated Laplace approximation, four models
  per vmapped pass (the paper profile's setting), 50 DDIM steps, and App. D.4's memorisation
  measure against the 1000 training images.

Every check that fails stops the script with a non-zero exit status. The report (JSON, with
date, device and commit) also extrapolates the measured per-unit costs to the paper's full
iteration counts on this machine.

Usage: python benchmarks/cifar_paper_path.py [--micro-batch 16] [--epochs 1] [--hvp-steps 3] [--out PATH]
(on a CPU use --micro-batch 16: the whole batch of 64 fits in 13 GB with its cached gradient
graph, but its gradient takes 25 s against 6.4 s in four parts of 16, and its cached-graph HVP
25 s against 20 s part by part; benchmarks/cifar_hvp.py measures both)
(``--unet smoke --n-train 64 ...`` runs the same path at toy size; the test suite does that.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import tempfile
import time
from pathlib import Path

import torch

from support.core.lanczos import lanczos
from support.core.laplace import hessian_vector_product, lanczos_laplace
from support.core.monge_metric import geodesic_acceleration, loss_gradient
from support.data.image_data import held_out_images, load_images, random_subset
from support.evaluation.frechet import frechet_distance, pixel_features
from support.experiments.cifar_experiment import draw_hessian_batches, memorisation_of
from support.infra.profiles import get_profile
from support.infra.reproducibility import seed_everything
from support.infra.results import atomic_write_text, run_metadata
from support.models.cifar_unet import (
    build_unet,
    ddpm_scheduler,
    fixed_batch_loss,
    make_twice_differentiable,
    unet_config,
)
from support.models.ddim import ddim_sample, ddim_scheduler, generate_images
from support.models.ddpm_training import TrainingPlan, train_ddpm

PAPER_UNET_PARAMETERS = 35_746_307
PAPER_CONV_IN = 3_584


def check(condition: bool, message: str) -> None:
    """Stop with ``message`` when a verification fails (a script, so no bare assert)."""
    if not condition:
        raise SystemExit(f"FAILED: {message}")


def timed(function):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def hessian_like_spectrum(dim: int, dtype: torch.dtype) -> torch.Tensor:
    """Known eigenvalues shaped like the conv_in spectra of Fig. 12: a power-law positive bulk, a small negative tail."""
    n_negative = dim // 5
    positive = 50.0 * torch.arange(1, dim - n_negative + 1, dtype=torch.float64).pow(-1.5)
    negative = -0.05 * torch.linspace(0.01, 1.0, n_negative, dtype=torch.float64)
    return torch.cat([positive, negative]).to(dtype)


def synthetic_lanczos(dim: int, k: int, generator: torch.Generator) -> dict[str, float]:
    """Paper-size Lanczos (k steps, full re-orthogonalisation, float32) on A = Q diag(lambda) Q^T with lambda known."""
    exact = hessian_like_spectrum(dim, torch.float64)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    matrix = ((q * exact) @ q.T).float()
    (values, vectors), seconds = timed(lambda: lanczos(lambda v: matrix @ v, dim, k, generator=generator,
                                                       dtype=torch.float32, progress=True))
    top = exact.sort(descending=True).values[:10]
    top_error = ((values[:10].double() - top).abs() / top).max().item()
    orthogonality = (vectors.T @ vectors - torch.eye(len(values))).abs().max().item()
    residual = ((matrix @ vectors[:, 0] - values[0] * vectors[:, 0]).norm() / values[0]).item()
    check(top_error < 1e-4, f"synthetic Lanczos: top-10 Ritz values off by {top_error:.1e} (relative)")
    check(orthogonality < 1e-4, f"synthetic Lanczos: Ritz vectors lost orthogonality ({orthogonality:.1e})")
    check(values[-1].item() >= exact.min().item() - 1e-4, "synthetic Lanczos: a Ritz value below the spectrum")
    return {"dim": dim, "k": k, "seconds": seconds, "top10_relative_error": top_error,
            "ritz_orthogonality": orthogonality, "top_residual": residual,
            "positive_ritz_values": int((values > 0).sum()), "lowest_ritz": values[-1].item(),
            "lowest_exact": exact.min().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unet", choices=["ddpm-cifar10-32", "smoke"], default="ddpm-cifar10-32")
    parser.add_argument("--images", choices=["digits", "cifar10"], default="digits")
    parser.add_argument("--n-train", type=int, default=None, help="default: the paper profile's 1000")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--selection-images", type=int, default=8)
    parser.add_argument("--hvp-steps", type=int, default=3, help="real Lanczos steps on batch 1")
    parser.add_argument("--hessian-batch", type=int, default=None, help="default: the paper profile's 64")
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="differentiate the Hessian batch in parts of this many images (bounded memory)")
    parser.add_argument("--synthetic-dim", type=int, default=PAPER_CONV_IN)
    parser.add_argument("--synthetic-k", type=int, default=None, help="default: the paper profile's k = 1000")
    parser.add_argument("--images-per-model", type=int, default=2)
    parser.add_argument("--checkpoints", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--out", type=Path, default=Path("_build/paper_path/cifar10_paper_path.json"))
    parser.add_argument("--no-compile", action="store_true",
                        help="train without torch.compile even where the paper profile compiles (CUDA)")
    args = parser.parse_args()

    profile = get_profile("paper")
    paper = profile.cifar
    sizes = dataclasses.replace(
        paper, images=args.images, unet=args.unet, n_train=args.n_train or paper.n_train, epochs=args.epochs,
        checkpoint_every=args.epochs, selection_images=args.selection_images,
        hessian_batch=args.hessian_batch or paper.hessian_batch, images_per_model=args.images_per_model,
        compile=paper.compile and not args.no_compile,
    )
    synthetic_k = args.synthetic_k or paper.lanczos_k
    device = profile.device
    generator = seed_everything(profile.seed)
    report: dict[str, object] = {"sizes": {k: str(v) if isinstance(v, torch.dtype) else v for k, v in vars(sizes).items()},
                                 "threads": torch.get_num_threads()}
    timings: dict[str, float] = {}
    report["micro_batch"] = args.micro_batch
    print(f"paper profile on {device}, {torch.get_num_threads()} threads; truncated: epochs {sizes.epochs}, "
          f"{args.hvp_steps} real Lanczos steps, {sizes.images_per_model} images per model; Hessian batch "
          f"{sizes.hessian_batch} in parts of {args.micro_batch or sizes.hessian_batch}")

    # Data (App. D.1): N images in [-1, 1] and held-out references for the selection score.
    data = load_images(sizes.images)
    train_images, train_index = random_subset(data, sizes.n_train, generator)
    held_out = held_out_images(sizes.images, data, train_index, sizes.selection_images, generator)
    check(tuple(train_images.shape) == (sizes.n_train, 3, 32, 32), f"training images {tuple(train_images.shape)}")
    check(-1 <= train_images.min() and train_images.max() <= 1, "training images outside [-1, 1]")
    train_images, held_out = train_images.to(device, sizes.dtype), held_out.to(device, sizes.dtype)

    # MAP training with an atomic checkpoint, then a re-run that must load it instead of training again.
    def initial_unet():
        torch.manual_seed(profile.seed)  # the initial weights, part of the checkpoint's fingerprint
        return build_unet(unet_config(sizes.unet)).to(device, sizes.dtype)

    unet = initial_unet()
    n_parameters = sum(p.numel() for p in unet.parameters())
    if sizes.unet == "ddpm-cifar10-32":
        check(n_parameters == PAPER_UNET_PARAMETERS, f"U-Net has {n_parameters:,} parameters")
    scheduler = ddpm_scheduler()
    ddim = ddim_scheduler(scheduler, sizes.ddim_steps)
    selection_noise = torch.randn(sizes.selection_images, 3, 32, 32, generator=generator, dtype=sizes.dtype).to(device)
    reference = pixel_features(held_out)

    @torch.no_grad()
    def selection_score(model) -> float:
        images, seconds = timed(lambda: ddim_sample(lambda x, t: model(x, t).sample, selection_noise, ddim))
        timings["selection_generation_s_per_image"] = seconds / sizes.selection_images
        return frechet_distance(pixel_features(images), reference)

    plan = TrainingPlan(sizes.epochs, sizes.batch_size, sizes.learning_rate, sizes.checkpoint_every,
                        mixed_precision=sizes.mixed_precision, compile=sizes.compile)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.checkpoints or Path(scratch) / "cifar10_ddpm"
        record, timings["training_s"] = timed(lambda: train_ddpm(unet, train_images, scheduler, plan, folder,
                                                                 generator, score=selection_score))
        check(math.isfinite(record.history[-1]["loss"]), "training loss is not finite")
        unet = initial_unet()  # what a re-run of the chapter starts from
        resumed, timings["resume_s"] = timed(lambda: train_ddpm(unet, train_images, scheduler, plan, folder,
                                                                generator, score=selection_score, progress=False))
        check(resumed.resumed_from == sizes.epochs and resumed.history == record.history,
              "a finished run was not loaded from its checkpoint")
    images_per_second = record.history[-1]["images_per_second"]
    report["training"] = {"history": record.history, "images_per_second": images_per_second,
                          "checkpoint_and_resume": "ok"}

    # Hessian batches (App. D.3) and real Lanczos steps with the reverse-mode HVP (App. D.2): the
    # graph cached once per batch, or, with --micro-batch, rebuilt part by part for every product.
    unet = make_twice_differentiable(unet).eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    batches = draw_hessian_batches(train_images, sizes.n_batches, sizes.hessian_batch, scheduler, generator)
    theta_star, loss, layout = fixed_batch_loss(unet, batches[0], scheduler, micro_batch=args.micro_batch)
    if sizes.unet == "ddpm-cifar10-32":
        check(layout.dim == PAPER_CONV_IN, f"conv_in has {layout.dim} parameters")
    gradient, timings["gradient_s"] = timed(lambda: loss_gradient(loss, theta_star))
    check(bool(torch.isfinite(gradient).all()), "non-finite gradient")
    # timed apart (and built again inside lanczos_laplace) to separate the one-off set-up from the products
    _, timings["hvp_setup_s"] = timed(lambda: hessian_vector_product(loss, theta_star, "reverse"))
    laplace, seconds = timed(lambda: lanczos_laplace(loss, theta_star, args.hvp_steps, generator, hvp="reverse",
                                                     progress=True))
    timings["hvp_s"] = (seconds - timings["hvp_setup_s"]) / args.hvp_steps
    check(laplace.rank >= 1, "no positive Ritz value after the real Lanczos steps")
    report["real_lanczos"] = {"steps": args.hvp_steps, "ritz_values_kept": laplace.eigenvalues.tolist(),
                              "dropped": laplace.n_dropped}

    # One right-hand side of the geodesic equation (eq 19): gradient and HVP in one pass.
    v = laplace.sample(1, generator)[0]
    acceleration, timings["geodesic_rhs_s"] = timed(lambda: geodesic_acceleration(loss, theta_star, v, "reverse"))
    check(acceleration.shape == v.shape and bool(torch.isfinite(acceleration).all()), "bad geodesic acceleration")

    # Paper-size Lanczos (k = 1000, K = 3,584, float32) on an operator with a known spectrum.
    report["synthetic_lanczos"] = synthetic_lanczos(args.synthetic_dim, synthetic_k, generator)
    timings["synthetic_lanczos_s"] = report["synthetic_lanczos"]["seconds"]

    # Generation with four models per vmapped pass (the paper profile's setting) and App. D.4's measure.
    velocities = laplace.sample(sizes.models_per_pass - 1, generator)
    thetas = torch.cat([theta_star[None], theta_star + velocities])
    noise = torch.randn(sizes.images_per_model, 3, 32, 32, generator=generator, dtype=sizes.dtype).to(device)
    images, seconds = timed(lambda: generate_images(unet, layout, thetas, noise, ddim, sizes.models_per_pass))
    timings["generation_s_per_image"] = seconds / (len(thetas) * sizes.images_per_model)
    check(tuple(images.shape) == (len(thetas), sizes.images_per_model, 3, 32, 32), f"images {tuple(images.shape)}")
    memorisation = memorisation_of(images, train_images)
    check(0 <= memorisation <= 1, f"memorisation {memorisation}")
    report["memorisation_of_generated"] = memorisation

    # What the paper's full iteration counts would cost on this machine at the measured rates.
    report["extrapolated_hours_here"] = {
        "training": paper.epochs * paper.n_train / images_per_second / 3600,
        "lanczos_all_batches": paper.n_batches * (paper.lanczos_k * timings["hvp_s"] + timings["hvp_setup_s"]) / 3600,
        "generation_fig13": (1 + 2 * len(paper.etas) * paper.posterior_samples) * paper.images_per_model
        * timings["generation_s_per_image"] / 3600,
    }
    report["timings"] = timings
    report["peak_memory_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: kilobytes
    payload = {"metadata": run_metadata(profile), "results": report}
    atomic_write_text(json.dumps(payload, indent=2) + "\n", args.out)
    for name, value in timings.items():
        print(f"{name:>40}: {value:10.3f}")
    for name, value in report["extrapolated_hours_here"].items():
        print(f"{'paper ' + name + ', hours here':>40}: {value:10.1f}")
    print(f"all checks passed; report written to {args.out}")


if __name__ == "__main__":
    main()
