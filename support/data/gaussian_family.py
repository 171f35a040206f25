"""The univariate Gaussian family in natural parameters: an exponential family whose geometry is known in
closed form, the oracle for the Hessian metric of Lobashev et al. (2025).

    p(x | eta) = exp(eta^T T(x) - log Z(eta)),   T(x) = (x, x^2),   eta = (mu / s2, -1 / (2 s2)),  eta_2 < 0,

with Z(eta) = int exp(eta^T T(x)) dx = sqrt(pi / -eta_2) exp(-eta_1^2 / (4 eta_2)). The Fisher metric is the
Hessian of log Z, which is the covariance of T:

    Cov[T] = [[s2, 2 mu s2], [2 mu s2, 2 s2^2 + 4 mu^2 s2]].
"""

from __future__ import annotations

import math

import torch

from ..infra.validation import require_finite, require_positive_int


def _check_natural(eta: torch.Tensor) -> None:
    require_finite("eta", eta)
    if eta.shape[-1] != 2:
        raise ValueError(f"natural parameters have two components (eta_1, eta_2); got shape {tuple(eta.shape)}")
    if bool((eta[..., 1] >= 0).any()):
        raise ValueError("eta_2 = -1 / (2 sigma^2) must be negative: no Gaussian has eta_2 >= 0")


def natural_from_moments(mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """eta = (mu / s2, -1 / (2 s2)) for means and variances of any matching shape: [..., 2]."""
    if bool((variance <= 0).any()):
        raise ValueError("variances must be positive")
    return torch.stack([mean / variance, -0.5 / variance], dim=-1)


def moments_from_natural(eta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, s2) of natural parameters eta [..., 2]."""
    _check_natural(eta)
    variance = -0.5 / eta[..., 1]
    return eta[..., 0] * variance, variance


def sufficient_statistics(x: torch.Tensor) -> torch.Tensor:
    """T(x) = (x, x^2): [..., 2] for samples x [...]."""
    return torch.stack([x, x.square()], dim=-1)


def log_partition(eta: torch.Tensor) -> torch.Tensor:
    """log Z(eta) = 0.5 log(pi / -eta_2) - eta_1^2 / (4 eta_2), [...] for eta [..., 2] (differentiable)."""
    _check_natural(eta)
    return 0.5 * torch.log(math.pi / -eta[..., 1]) - eta[..., 0] ** 2 / (4 * eta[..., 1])


def fisher_metric(eta: torch.Tensor) -> torch.Tensor:
    """The Fisher metric (= Hessian of log Z = Cov[T]) in natural coordinates, [..., 2, 2]."""
    mean, variance = moments_from_natural(eta)
    cross = 2 * mean * variance
    first = torch.stack([variance, cross], dim=-1)
    second = torch.stack([cross, 2 * variance**2 + 4 * mean**2 * variance], dim=-1)
    return torch.stack([first, second], dim=-2)


def sample(eta: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws from each member: [P, n] for eta [P, 2]."""
    require_positive_int("n", n)
    mean, variance = moments_from_natural(eta)
    noise = torch.randn(len(eta), n, generator=generator, dtype=eta.dtype).to(eta.device)
    return mean[:, None] + variance.sqrt()[:, None] * noise
