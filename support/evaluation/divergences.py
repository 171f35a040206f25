"""Distances between a generated sample and the target (Sec. 5.1, Fig. 5; App. C.1, C.2).

The paper reports "the KL-divergence between the target distribution and the generated data
distributions", averaged over 50 repetitions of 100 generated samples, without the direction or
the density estimator. This book uses:

* **Direction** KL(p_* || q): the target first, as the paper writes it. It is the expected
  log-likelihood gap of target samples under the model, so it punishes a model that misses
  target mass (memorisation: all mass on the training points) and is finite for a KDE q.
* **Estimator** q = Gaussian KDE of the generated subset with its bandwidth chosen by leave-one-out
  likelihood cross-validation (``FixedBandwidthKDE``; ``scipy.stats.gaussian_kde`` for Scott's rule). Scott's rule, scipy's default,
  sets the bandwidth from the overall standard deviation; for two well-separated modes that is
  the distance between the modes, which smears a memorised sample into a good-looking density
  (the 1D chapter shows both).
* **Integral** KL = int p_* (log p_* - log q) dx by the trapezoid rule on a grid, using the exact
  target density, so the only approximation is q itself.

``wasserstein_1d`` (scipy) is a bandwidth-free second opinion in 1D. ``wasserstein_1`` is the
empirical W1 of eq (38) in any dimension, an exact optimal-transport problem solved by POT's
network simplex (``ot.emd2``), as App. C.2 uses for the 2D experiment.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import ot
import torch
from scipy.integrate import trapezoid
from scipy.spatial.distance import cdist
from scipy.special import logsumexp
from scipy.stats import gaussian_kde, wasserstein_distance

from ..infra.validation import require_finite, require_positive_int, require_tensor

BANDWIDTHS = np.geomspace(1e-3, 3.0, 121)
"""Candidate KDE bandwidths for leave-one-out cross-validation."""
MAX_LOO_POINTS = 5000
"""Leave-one-out cross-validation forms an n x n matrix: larger samples must be subsampled."""
GRID_MASS_SHORTFALL = 1e-3
"""How far the trapezoid mass of p_* on a KL grid may miss 1 before the grid is refused."""


def _as_1d_numpy(samples: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    array = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or len(array) < 2:
        raise ValueError(f"{name} must be 1-D (or [n, 1]) with at least 2 points, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains non-finite values")
    return array.astype(np.float64)


def loo_bandwidth(samples: torch.Tensor | np.ndarray, candidates: np.ndarray = BANDWIDTHS) -> float:
    """Gaussian-KDE bandwidth maximising the leave-one-out log-likelihood of ``samples`` (1D)."""
    x = _as_1d_numpy(samples, "samples")
    n = len(x)
    if n > MAX_LOO_POINTS:
        raise ValueError(f"leave-one-out needs an n x n matrix; pass at most {MAX_LOO_POINTS} points, got {n}")
    sq = (x[:, None] - x[None, :]) ** 2
    np.fill_diagonal(sq, np.inf)
    loo = [
        (logsumexp(-sq / (2 * h**2), axis=1) - np.log((n - 1) * h * np.sqrt(2 * np.pi))).sum() for h in candidates
    ]
    return float(candidates[int(np.argmax(loo))])


@dataclass(frozen=True)
class FixedBandwidthKDE:
    """The 1D Gaussian KDE q(x) = (1/n) sum_i N(x; x_i, h^2) for a given bandwidth h.

    scipy's ``gaussian_kde`` scales its kernel by the samples' covariance, which is singular for
    identical samples (a fully memorising model) even when h is given; this one needs only h.
    """

    samples: np.ndarray
    bandwidth: float

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64)[:, None] - self.samples[None, :]) / self.bandwidth
        return logsumexp(-0.5 * z**2, axis=1) - np.log(len(self.samples) * self.bandwidth * np.sqrt(2 * np.pi))

    def pdf(self, x: np.ndarray) -> np.ndarray:
        return np.exp(self.logpdf(x))


def kde(samples: torch.Tensor | np.ndarray, bandwidth: float | str = "loo") -> gaussian_kde | FixedBandwidthKDE:
    """Gaussian KDE of 1D ``samples``; ``bandwidth`` is ``"loo"``, ``"scott"`` (scipy's rule) or a number."""
    x = _as_1d_numpy(samples, "samples")
    if bandwidth == "scott":
        if x.std() == 0:
            raise ValueError("Scott's rule sets the bandwidth from the samples' spread, which is 0 (identical "
                             "samples, e.g. a fully memorising model): pass an explicit bandwidth or 'loo'")
        return gaussian_kde(x)
    if bandwidth == "loo":
        return FixedBandwidthKDE(x, loo_bandwidth(x))
    if isinstance(bandwidth, str) or not math.isfinite(float(bandwidth)) or float(bandwidth) <= 0:
        raise ValueError(f"bandwidth must be 'loo', 'scott' or a finite positive number, got {bandwidth!r}")
    return FixedBandwidthKDE(x, float(bandwidth))


def kl_target_to_kde(
    target_log_prob: Callable[[torch.Tensor], torch.Tensor],
    samples: torch.Tensor | np.ndarray,
    grid: torch.Tensor,
    bandwidth: float | str = "loo",
) -> float:
    """KL(p_* || q) with q the KDE of ``samples``, by the trapezoid rule on the 1D ``grid``.

    ``grid`` must be increasing and cover the target's mass (the integrand is p_*-weighted): a
    descending grid would flip the sign, and a grid holding less than ``1 - GRID_MASS_SHORTFALL`` of
    p_* raises.
    """
    if require_tensor("grid", grid).ndim != 1 or len(grid) < 3:
        raise ValueError("grid must be a 1-D tensor of at least 3 points")
    x = require_finite("grid", grid).detach().cpu().numpy().astype(np.float64)
    if not (np.diff(x) > 0).all():
        raise ValueError("grid must be strictly increasing (a descending grid flips the sign of the integral)")
    log_p = target_log_prob(grid[:, None]).detach().cpu().numpy().astype(np.float64)
    p = np.exp(log_p)
    mass = float(trapezoid(p, x))
    if abs(1 - mass) > GRID_MASS_SHORTFALL:
        raise ValueError(f"the grid [{x[0]:.3g}, {x[-1]:.3g}] holds {mass:.6f} of the target's mass, not 1: widen "
                         "or refine it so that the integral covers p_*")
    log_q = kde(samples, bandwidth).logpdf(x)
    return float(trapezoid(p * (log_p - log_q), x))


@dataclass(frozen=True)
class RepeatedEstimate:
    """An estimate repeated on random subsets: the values, their mean and standard error."""

    values: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def standard_error(self) -> float:
        return float(self.values.std(ddof=1) / np.sqrt(len(self.values)))


def repeated_kl(
    target_log_prob: Callable[[torch.Tensor], torch.Tensor],
    samples: torch.Tensor,
    grid: torch.Tensor,
    repetitions: int,
    subset: int,
    generator: torch.Generator,
    bandwidth: float | str = "loo",
) -> RepeatedEstimate:
    """KL(p_* || KDE) on ``repetitions`` random subsets of ``subset`` samples (Fig. 5, App. C.1)."""
    flat = samples.reshape(-1)
    require_positive_int("repetitions", repetitions)
    if require_positive_int("subset", subset) > len(flat):
        raise ValueError(f"subset of {subset} requested from only {len(flat)} samples")
    values = [
        kl_target_to_kde(target_log_prob, flat[torch.randperm(len(flat), generator=generator)[:subset]], grid, bandwidth)
        for _ in range(repetitions)
    ]
    return RepeatedEstimate(np.asarray(values))


def wasserstein_1d(samples: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray) -> float:
    """Exact W1 between two 1D empirical distributions (``scipy.stats.wasserstein_distance``)."""
    return float(wasserstein_distance(_as_1d_numpy(samples, "samples"), _as_1d_numpy(reference, "reference")))


def wasserstein_1(samples: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray) -> float:
    """Eq (38): exact W1 between the empirical measures of samples [n, D] and reference [m, D].

    Uniform weights 1/n and 1/m, Euclidean ground cost (``scipy.spatial.distance.cdist``), solved
    exactly with ``ot.emd2``. Raises
    if the solver stops before optimality (it would return an upper bound) or on non-finite input.
    """
    arrays = []
    for name, x in (("samples", samples), ("reference", reference)):
        array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if array.ndim != 2 or len(array) == 0:
            raise ValueError(f"{name} must have shape [N, D] with N >= 1, got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains non-finite values")
        arrays.append(np.ascontiguousarray(array, dtype=np.float64))
    if arrays[0].shape[1] != arrays[1].shape[1]:
        raise ValueError(f"dimensions differ: {arrays[0].shape[1]} vs {arrays[1].shape[1]}")
    cost = cdist(arrays[0], arrays[1])  # direct differences: ot.dist's |x|^2 + |y|^2 - 2xy gives ~1e-8 for x = y
    value, log = ot.emd2(ot.unif(len(cost)), ot.unif(cost.shape[1]), cost, numItermax=10**8, log=True)
    if log["result_code"] != 1:
        raise RuntimeError(f"optimal transport did not reach optimality: {log['warning']}")
    return float(value)
