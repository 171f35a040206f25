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
LOO_ELEMENTS_PER_PASS = 2_000_000
"""Leave-one-out scores this many kernel values (candidates x n x n) per vectorised pass."""
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
    h = np.asarray(candidates, dtype=np.float64)
    per_pass = max(1, LOO_ELEMENTS_PER_PASS // n**2)  # candidates per vectorised pass, bounding its memory
    loo = np.concatenate([_loo_log_likelihoods(sq, h[i:i + per_pass]) for i in range(0, len(h), per_pass)])
    return float(h[int(np.argmax(loo))])


def _loo_log_likelihoods(sq: np.ndarray, h: np.ndarray) -> np.ndarray:
    """sum_i log (1/(n-1)) sum_{j != i} N(x_i; x_j, h^2) for each bandwidth in ``h``, from the squared
    distances ``sq`` [n, n] with an infinite diagonal.

    The log-sum-exp over j is shifted by its row maximum, finite because every row has n - 1 finite
    entries (scipy's ``logsumexp`` gives the same values to rounding but took about twice as long here).
    """
    exponent = -sq / (2 * h[:, None, None] ** 2)
    peak = exponent.max(axis=2)
    log_sum = np.log(np.exp(exponent - peak[..., None]).sum(axis=2)) + peak
    return (log_sum - np.log((len(sq) - 1) * h[:, None] * np.sqrt(2 * np.pi))).sum(axis=1)


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


class PooledWasserstein1D:
    """Exact 1D W1 between a weighted pool of S model blocks and a fixed reference sample, for many weights.

    The pooled sample puts weight ``counts[m] / sum_m counts[m] n_m`` on each of the n_m kept points of
    model m (a point is kept where ``keep`` holds), the reference 1/M on each of its M points. W1 is
    the integral of |F - G| of their CDFs, i.e. sum_i |cumulative signed weight up to z_i| (z_{i+1} - z_i)
    over the merged sorted points z (what ``scipy.stats.wasserstein_distance`` computes). The points
    are sorted once here, so each evaluation is one gather and one cumulative sum: a bootstrap that
    resamples whole models (``support.evaluation.ensemble_statistics``) becomes a reweighting of the
    same points instead of a new sort of S N points per resample. ``counts`` all 1 is the W1 of the
    whole pool.
    """

    def __init__(self, blocks: torch.Tensor, reference: torch.Tensor | np.ndarray, keep: torch.Tensor | None = None):
        if require_tensor("blocks", blocks).ndim != 2 or blocks.numel() == 0:
            raise ValueError(f"blocks must have shape [S, N] (S models of N 1D points), got {tuple(blocks.shape)}")
        keep = torch.ones_like(blocks, dtype=torch.bool) if keep is None else keep
        if keep.shape != blocks.shape or keep.dtype != torch.bool:
            raise ValueError(f"keep must be a boolean mask of the blocks' shape {tuple(blocks.shape)}")
        points = blocks.detach().cpu().double().numpy()[keep.cpu().numpy()]
        if not np.isfinite(points).all():
            raise ValueError("the kept points contain non-finite values: leave them out with keep")
        owner = np.broadcast_to(np.arange(len(blocks))[:, None], blocks.shape)[keep.cpu().numpy()]
        ref = _as_1d_numpy(reference, "reference")
        order = np.argsort(np.concatenate([points, ref]), kind="stable")
        merged = np.concatenate([points, ref])[order]
        self.models = len(blocks)
        self._kept_per_model = keep.sum(dim=1).cpu().double().numpy()
        self._owner = np.concatenate([owner, np.full(len(ref), -1)])[order][:-1]
        self._gaps = np.diff(merged)
        self._reference_weight = 1.0 / len(ref)

    def __call__(self, counts: torch.Tensor | np.ndarray) -> float:
        """W1 of the pool with model m counted ``counts[m]`` times (non-negative, [S])."""
        counts = np.asarray(counts.cpu() if isinstance(counts, torch.Tensor) else counts, dtype=np.float64)
        if counts.shape != (self.models,) or not np.isfinite(counts).all() or (counts < 0).any():
            raise ValueError(f"counts must be {self.models} finite non-negative numbers, got shape {counts.shape}")
        total = float(counts @ self._kept_per_model)
        if total == 0:
            raise ValueError("the counted models keep no point: the pooled sample is empty")
        weights = np.append(counts / total, -self._reference_weight)[self._owner]  # owner -1: the reference
        return float(np.abs(np.cumsum(weights)) @ self._gaps)


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
