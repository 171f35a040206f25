"""The CIFAR-10 denoiser of Sec. 5.2 / App. D: diffusers' UNet2DModel, built from its config, never downloaded.

* :func:`ddpm_cifar10_config` is the architecture of google/ddpm-cifar10-32 (35,746,307
  parameters; the paper's "36B" is a typo for 36M). ``conv_in``, the layer the paper treats
  Bayesianly, has 3,584. Its self-attention has one head over all channels (the hub config's
  ``attention_head_dim`` is null, as in Ho et al.'s DDPM); diffusers' default would give 32
  heads of 8 channels with the same weights, a different network that is three times slower to
  differentiate twice on a CPU.
* :func:`smoke_unet_config` is the same family at 177 k parameters for CPU runs.
* :func:`digits_unet_config` is the same family for one-channel 8 x 8 images (the digits chapter).
* :func:`ddpm_scheduler` is the 1000-step linear DDPM schedule used for training (App. D.1).
* :func:`fixed_batch_loss` is the per-batch loss manifold of App. D.3: the DDPM loss
  ||eps - eps_theta(sqrt(abar_t) x + sqrt(1 - abar_t) eps, t)||^2 with the images, the noise and
  the timesteps of one batch fixed, as a function of the flat parameters of a subset of layers.
* :func:`make_twice_differentiable` makes Hessian-vector products work through the network
  (the default attention processor has neither forward-mode AD nor double backward on CPU, and
  GroupNorm's forward-mode rule needs a contiguous input).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.models.attention_processor import AttnProcessor
from torch import nn

from ..core.monge_metric import SummedLoss
from ..core.parameters import ParameterLayout, flatten, functional_forward, select_parameters

BAYESIAN_LAYERS = ("conv_in",)
"""App. D: only the first convolution is treated Bayesianly."""


def ddpm_cifar10_config() -> dict[str, Any]:
    """UNet2DModel keyword arguments of google/ddpm-cifar10-32 (32 x 32 RGB, one-head attention at 16 x 16)."""
    return dict(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, norm_num_groups=32, act_fn="silu",
        attention_head_dim=None,
    )


def smoke_unet_config() -> dict[str, Any]:
    """The same blocks at (16, 32) channels, one layer per block, one-head attention at 16 x 16 (177,427 parameters).

    Small enough to train, differentiate twice and sample on two CPU cores within the smoke
    profile's minutes; conv_in has 448 parameters.
    """
    return {**ddpm_cifar10_config(), "layers_per_block": 1, "block_out_channels": (16, 32), "norm_num_groups": 8,
            "down_block_types": ("DownBlock2D", "AttnDownBlock2D"), "up_block_types": ("AttnUpBlock2D", "UpBlock2D")}


def digits_unet_config() -> dict[str, Any]:
    """The same blocks for grey 8 x 8 images: (32, 64) channels, one layer per block, one-head attention
    at 4 x 4 (701,345 parameters; conv_in has 320).

    Sized so that it memorises a few dozen to a few hundred digits within minutes of CPU training
    (the digits chapter), with the attention and the two resolutions of the CIFAR-10 U-Net.
    """
    return {**ddpm_cifar10_config(), "sample_size": 8, "in_channels": 1, "out_channels": 1, "layers_per_block": 1,
            "block_out_channels": (32, 64), "norm_num_groups": 8,
            "down_block_types": ("DownBlock2D", "AttnDownBlock2D"), "up_block_types": ("AttnUpBlock2D", "UpBlock2D")}


UNET_CONFIGS: dict[str, Callable[[], dict[str, Any]]] = {
    "ddpm-cifar10-32": ddpm_cifar10_config, "smoke": smoke_unet_config, "digits-8x8": digits_unet_config}


def unet_config(name: str) -> dict[str, Any]:
    """The configuration called ``name`` in the profiles (``ddpm-cifar10-32`` or ``smoke``)."""
    if name not in UNET_CONFIGS:
        raise ValueError(f"unknown U-Net {name!r}; choose one of {', '.join(UNET_CONFIGS)}")
    return UNET_CONFIGS[name]()


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


def make_twice_differentiable(unet: UNet2DModel) -> UNet2DModel:
    """Swap in the plain attention processor and give every GroupNorm a contiguous input (in place).

    The outputs are unchanged (the plain processor computes the same attention); afterwards
    ``jvp(grad)``, ``vjp(grad)`` and autograd's double backward all work and agree.
    """
    for module in unet.modules():
        if hasattr(module, "set_processor"):
            module.set_processor(AttnProcessor())
        if isinstance(module, nn.GroupNorm) and not getattr(module, "_book_contiguous", False):
            module.register_forward_pre_hook(_contiguous_input)
            module._book_contiguous = True
    return unet


def build_unet(config: dict[str, Any]) -> UNet2DModel:
    """A freshly initialised, twice-differentiable UNet2DModel (seed the global RNG before calling)."""
    return make_twice_differentiable(UNet2DModel(**config))


def ddpm_scheduler() -> DDPMScheduler:
    """The DDPM training schedule of ddpm-cifar10-32: 1000 steps, linear betas 1e-4 .. 0.02."""
    return DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                         variance_type="fixed_large", clip_sample=True)


@dataclass(frozen=True)
class FixedBatch:
    """One batch of the loss manifold (App. D.3): images x, their noise eps and timesteps t, all fixed."""

    images: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor


def draw_fixed_batch(images: torch.Tensor, scheduler: DDPMScheduler, generator: torch.Generator) -> FixedBatch:
    """Noise and uniform timesteps for ``images`` [B, 3, H, W] in [-1, 1], drawn once from ``generator``."""
    if images.ndim != 4:
        raise ValueError(f"images must have shape [B, C, H, W], got {tuple(images.shape)}")
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    steps = scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (len(images),), generator=generator).to(images.device)
    return FixedBatch(images, noise, timesteps)


def ddpm_loss(forward: Callable[..., Any], batch: FixedBatch, scheduler: DDPMScheduler) -> torch.Tensor:
    """Mean squared error of the predicted noise on a fixed batch (the DDPM objective)."""
    noisy = scheduler.add_noise(batch.images, batch.noise, batch.timesteps)
    return (forward(noisy, batch.timesteps).sample - batch.noise).square().mean()


def fixed_batch_loss(
    unet: UNet2DModel, batch: FixedBatch, scheduler: DDPMScheduler, layers: tuple[str, ...] = BAYESIAN_LAYERS,
    micro_batch: int | None = None,
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], ParameterLayout]:
    """(theta*, L(theta), layout): the loss of one fixed batch as a function of the chosen layers' parameters.

    With ``micro_batch`` smaller than the batch, L is returned as a :class:`SummedLoss` of the
    micro-batch means weighted by their share of the batch: the same function, whose gradients and
    Hessian-vector products are then computed one micro-batch at a time (bounded memory).
    """
    layout = select_parameters(unet, layers)

    def loss_of(part: FixedBatch) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda theta: ddpm_loss(functional_forward(unet, layout, theta), part, scheduler)

    n = len(batch.images)
    if micro_batch is None or micro_batch >= n:
        return flatten(unet, layout), loss_of(batch), layout
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be positive, got {micro_batch}")
    parts = [FixedBatch(*(tensor[start:start + micro_batch] for tensor in (batch.images, batch.noise, batch.timesteps)))
             for start in range(0, n, micro_batch)]
    loss = SummedLoss(tuple(loss_of(part) for part in parts), tuple(len(part.images) / n for part in parts))
    return flatten(unet, layout), loss, layout
