"""The latent-geometry chapter's stages: phase maps of the 2D MAP flow and its posterior ensembles, the
Hessian metric of the Gaussian family from samples, and DiffED between generated and training points.

Everything here reuses chapter 9's problem (``fit_memorising_flow_2d``, ``full_covariance_ensembles_2d``)
and the evaluation modules :mod:`support.evaluation.latent_phases` and :mod:`support.evaluation.spacetime`;
sizes come from ``profile.latent_geometry``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.parameters import ParameterLayout, functional_forward
from ..data.gaussian_family import fisher_metric, log_partition, natural_from_moments, sample, sufficient_statistics
from ..evaluation.latent_phases import PhaseMap, phase_map
from ..evaluation.spacetime import DataMixture, data_points_in_spacetime, diffed_curves, segment_lengths
from ..infra.profiles import LatentGeometrySizes
from ..models.convex_potential import bregman_divergence, fit_convex_potential, hessian_metric, scaled_log_posterior

PHASE_HALF_WIDTH = 3.0
"""The latent grid covers [-3, 3]^2, which holds all but 0.5 % of the standard normal base distribution's mass."""
DATA_TIME = 0.9
"""Flow time at which a data point's denoising distribution is taken as its spacetime end: noise level
(1 - t) / t = 1/9, a fifth of the target modes' standard deviation."""
FAMILY_MEANS = (-2.0, 2.0)
FAMILY_VARIANCES = (0.3, 1.8)
"""The Gaussians N(mu, s2) whose natural parameters fit the convex potential: mu and s2 uniform in these ranges."""
BREGMAN_REFERENCE = (0.5, 0.8)
"""(mu, s2) of the member that draws Theorem 1's samples."""
BREGMAN_DRAWS = 32
"""Independent samples of each size N in Theorem 1's check: one draw's error is the sup of a random linear
function (of T_bar - E T), whose size varies a lot from draw to draw, so the check compares means."""


@dataclass(frozen=True)
class BoundarySummary:
    """How sharp one flow's phase boundaries are: its local Lipschitz constants on and off them."""

    boundary_median: float
    interior_median: float
    peak: float
    peak_on_boundary: bool
    boundary_share: float
    """Share of grid points that lie on a boundary."""

    @classmethod
    def of(cls, found: PhaseMap) -> BoundarySummary:
        on, off = found.lipschitz[found.boundary], found.lipschitz[~found.boundary]
        if len(on) == 0 or len(off) == 0:
            raise ValueError("the phase map has no boundary (or nothing but boundary): refine the grid")
        return cls(on.median().item(), off.median().item(), found.lipschitz.max().item(),
                   bool(found.boundary.flatten()[found.lipschitz.argmax()]), found.boundary.double().mean().item())


def model_phase_maps(model: torch.nn.Module, layout: ParameterLayout, thetas: torch.Tensor, train_points: torch.Tensor,
                     sizes: LatentGeometrySizes, steps: int) -> list[PhaseMap]:
    """The phase map of the model at each parameter vector in thetas [S, K] (one per posterior member)."""
    return [phase_map(functional_forward(model, layout, theta), train_points, PHASE_HALF_WIDTH, sizes.phase_grid, steps)
            for theta in thetas]


def _inner_family_grid(means: int, variances: int, dtype: torch.dtype) -> torch.Tensor:
    """[means * variances, 2] natural parameters of a grid of Gaussians inside the fitted range: mu over
    70 % of ``FAMILY_MEANS``, s2 in [0.5, 1.4] (where the fit and Theorem 1's check are compared)."""
    mean, variance = torch.meshgrid(torch.linspace(0.7 * FAMILY_MEANS[0], 0.7 * FAMILY_MEANS[1], means, dtype=dtype),
                                    torch.linspace(0.5, 1.4, variances, dtype=dtype), indexing="ij")
    return natural_from_moments(mean.flatten(), variance.flatten())


@dataclass(frozen=True)
class FamilyMetricFit:
    """The convex potential fitted to samples of the Gaussian family, checked against its closed forms."""

    relative_errors: np.ndarray
    """Relative Frobenius error of the potential's Hessian against the Fisher metric at the test parameters."""
    test_eta: torch.Tensor
    """[P, 2] test natural parameters (inside the fitted range)."""
    potential: torch.nn.Module


def fit_family_metric(sizes: LatentGeometrySizes, generator: torch.Generator, dtype: torch.dtype) -> FamilyMetricFit:
    """Draw ``family_parameters`` Gaussians, ``family_samples`` samples each, fit the convex potential to
    their mean statistics and compare its Hessian with the closed-form Fisher metric on a test grid."""
    mean = FAMILY_MEANS[0] + (FAMILY_MEANS[1] - FAMILY_MEANS[0]) * torch.rand(sizes.family_parameters, generator=generator, dtype=dtype)
    variance = FAMILY_VARIANCES[0] + (FAMILY_VARIANCES[1] - FAMILY_VARIANCES[0]) * torch.rand(
        sizes.family_parameters, generator=generator, dtype=dtype)
    eta = natural_from_moments(mean, variance)
    statistics = sufficient_statistics(sample(eta, sizes.family_samples, generator)).mean(dim=1)
    potential = fit_convex_potential(eta, statistics, sizes.family_hidden, sizes.family_steps, generator)
    test_eta = _inner_family_grid(5, 4, dtype)
    found, exact = hessian_metric(potential, test_eta).detach(), fisher_metric(test_eta)
    errors = (torch.linalg.matrix_norm(found - exact) / torch.linalg.matrix_norm(exact)).numpy()
    return FamilyMetricFit(errors, test_eta, potential)


@dataclass(frozen=True)
class BregmanCheck:
    """Theorem 1 of Lobashev et al. on a grid: the scaled log posterior against -D(eta, eta')."""

    sizes: tuple[int, ...]
    errors: tuple[float, ...]
    """Largest |(1/N) log p(eta | x) + D(eta, eta')| over the grid (both shifted to a maximum of 0), per N:
    the mean over ``BREGMAN_DRAWS`` independent samples of N points."""
    standard_errors: tuple[float, ...]
    """Standard errors of those means."""
    potential_divergence_error: float
    """Largest |D_psi - D_logZ| of the fitted potential on the same grid, relative to the largest D."""


def bregman_concentration(sizes: LatentGeometrySizes, potential: torch.nn.Module, generator: torch.Generator,
                          dtype: torch.dtype) -> BregmanCheck:
    """Draw ``BREGMAN_DRAWS`` samples of N points from the reference member for each N in ``bregman_sizes`` and
    compare the grid posterior's N-th root with exp(-D) (Theorem 1); and the fitted potential's Bregman
    divergence with the exact one."""
    grid = _inner_family_grid(41, 31, dtype)
    reference = natural_from_moments(torch.tensor(BREGMAN_REFERENCE[0], dtype=dtype), torch.tensor(BREGMAN_REFERENCE[1], dtype=dtype))
    divergence = bregman_divergence(log_partition, grid, reference)
    limit = -(divergence - divergence.min())
    errors, standard_errors = [], []
    for n in sizes.bregman_sizes:
        draws = [sufficient_statistics(sample(reference[None], n, generator)[0]).mean(dim=0) for _ in range(BREGMAN_DRAWS)]
        found = np.array([(scaled_log_posterior(log_partition(grid), grid, statistic) - limit).abs().max().item()
                          for statistic in draws])
        errors.append(float(found.mean()))
        standard_errors.append(float(found.std(ddof=1) / np.sqrt(len(found))))
    with torch.no_grad():
        learned = bregman_divergence(potential, grid, reference)
    relative = ((learned - divergence).abs().max() / divergence.max()).item()
    return BregmanCheck(tuple(sizes.bregman_sizes), tuple(errors), tuple(standard_errors), relative)


def diffed_to_training(data: DataMixture, samples: torch.Tensor, train_points: torch.Tensor,
                       sizes: LatentGeometrySizes, candidates: int = 2) -> torch.Tensor:
    """[n] the smallest DiffED from each sample [n, D] to its ``candidates`` nearest training points [m, D]
    (nearest in the plane), in the geometry of ``data``.

    Every (sample, candidate) pair is one curve of one batched minimisation, from (t x, t) to (t y, t) at
    t = ``DATA_TIME``. The DiffED to a training point grows fast with the distance in the plane, so the
    nearest few decide the minimum.
    """
    k = min(candidates, len(train_points))
    nearest = torch.cdist(samples, train_points).topk(k, dim=1, largest=False).indices  # [n, k]
    start = data_points_in_spacetime(samples.repeat_interleave(k, dim=0), DATA_TIME)
    end = data_points_in_spacetime(train_points[nearest.flatten()], DATA_TIME)
    curves = diffed_curves(segment_lengths(data), start, end, sizes.curve_points, sizes.curve_controls, sizes.curve_steps)
    return curves.lengths.reshape(len(samples), k).min(dim=1).values
