"""Gaussian-mixture targets of the toy experiments (Sec. 5.1 and App. C).

1D (Sec. 5.1): equal weights, means -1.5 and 1.5, variances 0.1; the memorised training set
is the two means. 2D (App. C.2): means (1.5, 1.5) and (-1.5, -1.5), covariance 0.2 I.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class IsotropicGMM:
    """Equal-weight mixture of isotropic Gaussians N(mean_k, variance_k I) in D dimensions."""

    means: torch.Tensor
    """[M, D] component means."""
    variances: torch.Tensor
    """[M] per-component variances (isotropic)."""

    def __post_init__(self) -> None:
        if self.means.ndim != 2:
            raise ValueError(f"means must have shape [M, D], got {tuple(self.means.shape)}")
        if self.variances.shape != (self.means.shape[0],):
            raise ValueError(
                f"variances must have shape [M] = [{self.means.shape[0]}], "
                f"got {tuple(self.variances.shape)}"
            )
        if not bool((self.variances > 0).all()):
            raise ValueError("variances must be positive")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` points with *exactly balanced* modes (n // M per mode, remainder spread).

        Balanced draws remove the mode-count noise that otherwise dominates distances between
        two target samples (App. C.2's W1, toolchain note); rows are returned shuffled.
        """
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        m = self.n_components
        counts = torch.full((m,), n // m)
        counts[: n % m] += 1
        labels = torch.repeat_interleave(torch.arange(m), counts)
        labels = labels[torch.randperm(n, generator=generator)]
        noise = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        return self.means[labels] + noise * self.variances[labels].sqrt()[:, None]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density at x of shape [N, D] -> [N]."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [N, {self.dim}], got {tuple(x.shape)}")
        sq = torch.cdist(x, self.means.to(x)).square()  # [N, M]
        var = self.variances.to(x)
        comp = -0.5 * sq / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
        return torch.logsumexp(comp, dim=1) - math.log(self.n_components)


def gmm_1d(dtype: torch.dtype = torch.float64) -> IsotropicGMM:
    """Target of the 1D experiment (Sec. 5.1): means +-1.5, variances 0.1."""
    return IsotropicGMM(
        means=torch.tensor([[-1.5], [1.5]], dtype=dtype),
        variances=torch.tensor([0.1, 0.1], dtype=dtype),
    )


def gmm_2d(dtype: torch.dtype = torch.float64) -> IsotropicGMM:
    """Target of the 2D experiment (App. C.2): means +-(1.5, 1.5), covariance 0.2 I."""
    return IsotropicGMM(
        means=torch.tensor([[1.5, 1.5], [-1.5, -1.5]], dtype=dtype),
        variances=torch.tensor([0.2, 0.2], dtype=dtype),
    )
