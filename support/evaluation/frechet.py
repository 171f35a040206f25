"""Fréchet distance between Gaussian fits of two feature sets (Heusel et al., 2017), for checkpoint selection.

App. D.1 picks the checkpoint "that balances memorisation and generalisation best, defined by
the FID". FID is the Fréchet (2-Wasserstein) distance between Gaussians fitted to Inception-v3
features of generated and real images,

    FD = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2}).

The Inception network needs torchvision (no CPU build of it can be installed here) and a 92 MB
weights file that runtime code must not download, so the book's **documented fallback** is the
same distance on weight-free features: :func:`pixel_features` average-pools each image to
8 x 8 x 3 = 192 numbers (colour layout and coarse shape, no texture). It is compared against
held-out real images. A user with FID at hand passes their own ``score`` to the trainer
(:func:`support.models.ddpm_training.train_ddpm`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_fit(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D] (N >= 2), in float64."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must have shape [N, D] with N >= 2, got {tuple(features.shape)}")
    f = features.double()
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(0.5 * (matrix + matrix.T))
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Fréchet distance between Gaussian fits of features a [N, D] and b [M, D].

    tr (S_a^{1/2} S_b S_a^{1/2})^{1/2} is computed from symmetric eigendecompositions, so it is
    real and non-negative even for the rank-deficient covariances of few samples.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need features [N, D] and [M, D], got {tuple(a.shape)} and {tuple(b.shape)}")
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        raise ValueError("features must be finite")
    mu_a, cov_a = gaussian_fit(a)
    mu_b, cov_b = gaussian_fit(b)
    root_a = _psd_sqrt(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def pixel_features(images: torch.Tensor, pooled: int = 8) -> torch.Tensor:
    """Images [N, C, H, W] average-pooled to [N, C * pooled * pooled] (the fallback feature map)."""
    if images.ndim != 4:
        raise ValueError(f"images must have shape [N, C, H, W], got {tuple(images.shape)}")
    return F.adaptive_avg_pool2d(images, pooled).flatten(1)
