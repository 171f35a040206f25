"""Small closed-form losses with curved valleys, for pictures and oracles of the geometry chapters."""

from __future__ import annotations

from collections.abc import Callable

import torch


def banana_loss(bend: float = 1.0, width: float = 1.0, thickness: float = 0.2) -> Callable[[torch.Tensor], torch.Tensor]:
    """L(theta) = theta_1^2 / (2 width^2) + (theta_2 - bend theta_1^2)^2 / (2 thickness^2).

    The negative log-density of the classic "banana" distribution: its minimum is theta* = 0 with
    Hessian diag(1/width^2, 1/thickness^2), and its valley bends along theta_2 = bend theta_1^2, so
    a Gaussian (Laplace) approximation at the minimum puts mass where the loss is high. Works on
    theta of shape [2] (and on [..., 2] for plotting grids).
    """
    if width <= 0 or thickness <= 0:
        raise ValueError("width and thickness must be positive")

    def loss(theta: torch.Tensor) -> torch.Tensor:
        t1, t2 = theta[..., 0], theta[..., 1]
        return 0.5 * (t1 / width) ** 2 + 0.5 * ((t2 - bend * t1**2) / thickness) ** 2

    return loss
