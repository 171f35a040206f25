"""Deterministic DDIM generation and its reading as a flow (Sec. 2.1.2, eq 5-6; App. D.1).

App. D generates images with 50 DDIM steps (Song et al., 2021a) at eta = 0. With
abar_t the DDPM's cumulative signal fraction, write

    y = x / sqrt(abar_t),    sigma = sqrt(1 - abar_t) / sqrt(abar_t).

The probability-flow ODE of the diffusion, eq (5), x' = f x - g^2/2 grad log p_t(x), with the
score model s_theta = -eps_theta / sqrt(1 - abar_t) becomes in these coordinates the flow

    dy / dsigma = eps_theta(sqrt(abar) y, t(sigma)),                              (eq 6 view)

and one deterministic DDIM step from t to t' is *exactly* one Euler step of this flow:
y' = y + (sigma' - sigma) eps_theta. So DDIM with eta = 0 is flow matching's Euler sampler in a
reparametrisation of space and time (Gao et al., 2024), which is why the book treats the image
model as a flow. :func:`ddim_flow_step` implements that Euler step, and the tests check that it
equals diffusers' ``DDIMScheduler.step`` to rounding.

We turn off diffusers' ``clip_sample`` (clipping the predicted clean image to [-1, 1] at every
step): with it, DDIM is no longer the Euler scheme of any flow. Finished images are clamped to
[-1, 1] once, for display and for the memorisation distances.

Generation for many models at once: the Bayesian layer is ``conv_in`` only (App. D), so the
S perturbed generators differ in one weight tensor. :func:`generate_images` vmaps
``functional_call`` over the stacked parameter vectors, so one network pass serves every model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch.func import vmap
from tqdm import tqdm

from ..core.parameters import ParameterLayout, functional_forward

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(x_t [..., 3, H, W], t) -> predicted noise eps_theta(x_t, t) of the same shape."""


def ddim_scheduler(training: DDPMScheduler, steps: int) -> DDIMScheduler:
    """The deterministic DDIM sampler over the training schedule, with ``steps`` steps and no clipping."""
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    scheduler = DDIMScheduler.from_config(training.config, clip_sample=False)
    scheduler.set_timesteps(steps)
    return scheduler


def flow_coordinates(abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sqrt(abar), sigma = sqrt((1 - abar) / abar)): the scale and the time of the eq (6) flow."""
    return abar.sqrt(), ((1 - abar) / abar).sqrt()


def ddim_flow_step(x: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor, abar_next: torch.Tensor) -> torch.Tensor:
    """One Euler step of dy/dsigma = eps in y = x / sqrt(abar), mapped back to x (equals a DDIM step)."""
    scale, sigma = flow_coordinates(abar)
    scale_next, sigma_next = flow_coordinates(abar_next)
    return scale_next * (x / scale + (sigma_next - sigma) * eps)


def ddim_sample(denoiser: Denoiser, x0: torch.Tensor, scheduler: DDIMScheduler, progress: bool = False) -> torch.Tensor:
    """Integrate the DDIM flow from noise ``x0`` to images (clamped to [-1, 1]); any leading batch shape."""
    x = x0
    for t in tqdm(scheduler.timesteps, desc="DDIM", unit="step", disable=not progress, leave=False):
        x = scheduler.step(denoiser(x, t), t, x).prev_sample
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError("DDIM produced non-finite images: the generator's weights are broken")
    return x.clamp(-1, 1)


def ensemble_denoiser(unet: UNet2DModel, layout: ParameterLayout, thetas: torch.Tensor) -> Denoiser:
    """The noise predictions of M generators that differ in the parameters ``layout``: x [M, N, ...] -> eps."""
    if thetas.ndim != 2 or thetas.shape[1] != layout.dim:
        raise ValueError(f"thetas must have shape [M, {layout.dim}], got {tuple(thetas.shape)}")

    def one(theta: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return functional_forward(unet, layout, theta)(x, t).sample

    if len(thetas) == 1:  # one model: a plain call (vmap's batching rules cost 60 % extra on a CPU)
        return lambda x, t: one(thetas[0], x[0], t)[None]
    batched = vmap(one, in_dims=(0, 0, None))
    return lambda x, t: batched(thetas, x, t)


@torch.no_grad()
def generate_images(
    unet: UNet2DModel,
    layout: ParameterLayout,
    thetas: torch.Tensor,
    x0: torch.Tensor,
    scheduler: DDIMScheduler,
    models_per_pass: int = 8,
    progress: bool = False,
) -> torch.Tensor:
    """Images [M, N, C, H, W] of M generators (rows of ``thetas``) from the same noise x0 [N, C, H, W],
    or each from its own noise, x0 [M, N, C, H, W].

    ``models_per_pass`` generators share one vmapped network pass (memory grows with it). On a
    CPU one model per pass is fastest (smoke U-Net, 8 models x 16 images per step: 0.35 s one
    at a time, 0.74 s vmapped, 0.82 s as one concatenated batch); a GPU profits from several.
    """
    if x0.ndim not in (4, 5) or (x0.ndim == 5 and len(x0) != len(thetas)):
        raise ValueError(f"x0 must have shape [N, C, H, W] or [M = {len(thetas)}, N, C, H, W], got {tuple(x0.shape)}")
    if not bool(torch.isfinite(thetas).all()):
        raise ValueError("thetas must be finite (a filtered, unconverged geodesic has no endpoint)")
    unet = unet.eval()
    noise = x0.expand(len(thetas), *x0.shape) if x0.ndim == 4 else x0
    out = []
    for block, start in tqdm(zip(thetas.split(models_per_pass), noise.split(models_per_pass)), desc="generators",
                             unit="pass", total=-(-len(thetas) // models_per_pass), disable=not progress):
        out.append(ddim_sample(ensemble_denoiser(unet, layout, block), start.to(block.dtype), scheduler))
    return torch.cat(out)


@torch.no_grad()
def tweedie_denoise(denoiser: Denoiser, images: torch.Tensor, scheduler: DDPMScheduler, timestep: int) -> torch.Tensor:
    """One-step denoising of ``images`` read as x_t at ``timestep``: Tweedie's estimate of x_0,

        x_0 ~ (x_t - sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(abar_t),

    clamped to [-1, 1]. Applied to a finished image, it removes what the denoiser takes for noise
    at that level and keeps what it takes for signal: a training image plus unstructured noise
    comes back close to the training image."""
    steps = scheduler.config.num_train_timesteps
    if not 0 <= timestep < steps:
        raise ValueError(f"timestep must lie in [0, {steps}), got {timestep}")
    abar = scheduler.alphas_cumprod[timestep].to(images)
    t = torch.full((len(images),), timestep, device=images.device)
    return ((images - (1 - abar).sqrt() * denoiser(images, t)) / abar.sqrt()).clamp(-1, 1)
