"""The spacetime of a denoiser: its denoising distributions on z = (x, t), their Fisher-Rao length, DiffED.

After Karczewski et al. (2025), "The spacetime of diffusion models", in this book's flow time: a point
y of the data is seen at time t in (0, 1) as x = t y + (1 - t) eps (eq 4; t = 1 is the data, t = 0 pure
noise). The *denoising distribution* of a spacetime point z = (x, t) is the posterior p(y | x, t). For
data drawn from a mixture of isotropic Gaussians, sum_k pi_k N(mu_k, v_k I), it is again such a mixture,

    p(y | x, t) = sum_k w_k N(m_k, s_k^2 I),   s_k^2 = 1 / (1 / v_k + a),   m_k = s_k^2 (mu_k / v_k + a x / t),
    w_k ~ pi_k N(x; t mu_k, (t^2 v_k + (1 - t)^2) I),   a = t^2 / (1 - t)^2,

and v_k = 0 gives the *empirical* model of a training set {y_i} (m_k = y_i, s_k = 0, w = the softmax
weights lambda_i of the closed-form field, chapter 1). In both cases p(y | x, t) is proportional to
p_data(y) exp(eta(z)^T T(y)) with the sufficient statistic T(y) = (y, ||y||^2) and natural parameter

    eta(x, t) = (t x / (1 - t)^2, -t^2 / (2 (1 - t)^2)),

an exponential family indexed by the spacetime (003's Theorem). Its Fisher-Rao metric in eta is the
covariance of T (the Hessian of the log-partition), so the length element of a curve z(s) is
||d eta||^2_{Cov[T]} = Var(d eta^T T(y)) (:func:`segment_lengths`): the Fisher metric pulled back to z.
For a categorical (the empirical model) this is sum_i dp_i^2 / p_i, whose geodesic distance between two
point masses is pi (:func:`categorical_arc_lengths`, exact per segment, gives every jump its full length;
:func:`categorical_chord_lengths` is the smooth energy to minimise).

DiffED (the Diffusion Edit Distance) between two data points y_a, y_b is the length of the shortest
spacetime curve between their denoising distributions at a small noise level: from (t y_a, t) to
(t y_b, t). :func:`diffed_curves` minimises a discretised curve energy over cubic B-spline curves (as
the authors do, with splines) in (x, logit t), with the ends fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.interpolate import BSpline

from ..data.toy_data import IsotropicGMM
from ..infra.validation import require_finite, require_positive_int

_FLOOR = 1e-300
"""Squared lengths are floored here before the square root, whose gradient at 0 would be infinite."""

SegmentLengths = Callable[[torch.Tensor], torch.Tensor]
"""Curves [B, M, D + 1] of spacetime points (x, t) -> the Fisher-Rao lengths [B, M - 1] of their segments."""


@dataclass(frozen=True)
class DataMixture:
    """The data distribution sum_k pi_k N(mu_k, v_k I): a Gaussian mixture, or (v = 0) a training set."""

    means: torch.Tensor
    """[K, D] component means mu_k (the training points of an empirical model)."""
    variances: torch.Tensor
    """[K] component variances v_k >= 0 (all 0 for an empirical model)."""
    weights: torch.Tensor
    """[K] mixture weights pi_k, summing to one."""

    def __post_init__(self) -> None:
        require_finite("means", self.means)
        if self.means.ndim != 2 or self.variances.shape != self.means.shape[:1] or self.weights.shape != self.variances.shape:
            raise ValueError(f"need means [K, D], variances [K] and weights [K]; got {tuple(self.means.shape)}, "
                             f"{tuple(self.variances.shape)}, {tuple(self.weights.shape)}")
        if bool((self.variances < 0).any()) or bool((self.weights <= 0).any()):
            raise ValueError("variances must be >= 0 and weights > 0")

    @classmethod
    def empirical(cls, train_points: torch.Tensor) -> DataMixture:
        """The empirical distribution of a training set [n, D]: the memorising model's data."""
        n = len(train_points)
        return cls(train_points, torch.zeros(n, dtype=train_points.dtype, device=train_points.device),
                   torch.full((n,), 1 / n, dtype=train_points.dtype, device=train_points.device))

    @classmethod
    def of_target(cls, target: IsotropicGMM) -> DataMixture:
        """An equal-weight isotropic Gaussian mixture (the toy targets): its exact denoiser."""
        k = target.n_components
        return cls(target.means, target.variances, torch.full((k,), 1 / k, dtype=target.means.dtype,
                                                               device=target.means.device))

    @property
    def dim(self) -> int:
        return self.means.shape[1]


@dataclass(frozen=True)
class DenoisingPosterior:
    """p(y | x, t) = sum_k w_k N(m_k, s_k^2 I) for a batch of spacetime points."""

    log_weights: torch.Tensor
    """[..., K] log w_k, the posterior component log-weights (finite where w_k underflows to 0)."""
    means: torch.Tensor
    """[..., K, D] posterior component means m_k."""
    variances: torch.Tensor
    """[..., K] posterior component variances s_k^2 (0 for the empirical model)."""

    @property
    def weights(self) -> torch.Tensor:
        """[..., K] posterior component weights w_k."""
        return self.log_weights.exp()


def _check_times(t: torch.Tensor) -> None:
    require_finite("t", t)
    if bool(((t <= 0) | (t >= 1)).any()):
        raise ValueError(f"spacetime times must lie in the open interval (0, 1) (t = 1 is a point mass, t = 0 pure "
                         f"noise); got values in [{float(t.min()):.3g}, {float(t.max()):.3g}]")


def natural_parameters(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """eta(x, t) = (t x / (1 - t)^2, -t^2 / (2 (1 - t)^2)) for x [..., D] and t [...]: [..., D + 1]."""
    _check_times(t)
    scale = (1 - t) ** 2
    return torch.cat([(t / scale)[..., None] * x, (-(t**2) / (2 * scale))[..., None]], dim=-1)


def denoising_posterior(data: DataMixture, x: torch.Tensor, t: torch.Tensor) -> DenoisingPosterior:
    """p(y | x, t) for spacetime points x [..., D], t [...] (see the module docstring)."""
    _check_times(t)
    if x.shape[-1] != data.dim or x.shape[:-1] != t.shape:
        raise ValueError(f"need x [..., {data.dim}] and t [...] of the same batch shape; got {tuple(x.shape)}, "
                         f"{tuple(t.shape)}")
    a = (t / (1 - t)) ** 2  # [...]
    mu, v = data.means, data.variances  # [K, D], [K]
    observed = (t[..., None] ** 2) * v + ((1 - t) ** 2)[..., None]  # [..., K] variance of x given component k
    squared = (x[..., None, :] - t[..., None, None] * mu).square().sum(-1)  # [..., K]
    log_w = data.weights.log() - squared / (2 * observed) - 0.5 * data.dim * observed.log()
    log_weights = torch.log_softmax(log_w, dim=-1)
    gaussian = v > 0  # components with v = 0 are training points: the posterior keeps them as point masses
    v_safe = torch.where(gaussian, v, torch.ones_like(v))  # no 1 / 0 anywhere, so no NaN in any gradient
    variances = torch.where(gaussian, 1 / (1 / v_safe + a[..., None]), torch.zeros_like(a[..., None] * v))
    pulled = (a / t)[..., None, None] * x[..., None, :]  # a x / t = t x / (1 - t)^2
    means = torch.where(gaussian[:, None], variances[..., None] * (mu / v_safe[:, None] + pulled), mu)
    return DenoisingPosterior(log_weights, means, variances)


def statistic_covariance(posterior: DenoisingPosterior) -> torch.Tensor:
    """Cov[T(y)] under p(y | x, t), T(y) = (y, ||y||^2): the Fisher metric in eta, [..., D + 1, D + 1].

    Written as within-component covariances plus the weighted scatter of the component means of T, so
    that nearly one-hot weights lose nothing to cancellation. Per component (y ~ N(m, s^2 I) in D
    dimensions): Cov[y] = s^2 I, Cov[y, ||y||^2] = 2 s^2 m, Var[||y||^2] = 2 D s^4 + 4 s^2 ||m||^2.
    """
    w, m, s2 = posterior.weights, posterior.means, posterior.variances
    d = m.shape[-1]
    norm2 = m.square().sum(-1)  # [..., K]
    component_mean = torch.cat([m, (norm2 + d * s2)[..., None]], dim=-1)  # E_k[T], [..., K, D + 1]
    mean = (w[..., None] * component_mean).sum(-2)
    centred = component_mean - mean[..., None, :]
    scatter = torch.einsum("...k,...ki,...kj->...ij", w, centred, centred)
    within = torch.zeros_like(scatter)
    eye = torch.eye(d, dtype=m.dtype, device=m.device)
    within[..., :d, :d] = (w * s2).sum(-1)[..., None, None] * eye
    cross = (w[..., None] * 2 * s2[..., None] * m).sum(-2)
    within[..., :d, d] = cross
    within[..., d, :d] = cross
    within[..., d, d] = (w * (2 * d * s2**2 + 4 * s2 * norm2)).sum(-1)
    return scatter + within


def segment_lengths(data: DataMixture) -> SegmentLengths:
    """Fisher-Rao lengths of the segments of spacetime curves [B, M, D + 1] (x, t): the midpoint rule
    ||Delta eta||_{Cov[T] at the midpoint}, [B, M - 1]. Exact as segments shrink; a segment across a
    jump of the weights (the empirical model near t = 1) needs :func:`categorical_arc_lengths`."""

    def lengths(curves: torch.Tensor) -> torch.Tensor:
        x, t = curves[..., :-1], curves[..., -1]
        eta = natural_parameters(x, t)
        middle = 0.5 * (curves[..., 1:, :] + curves[..., :-1, :])
        metric = statistic_covariance(denoising_posterior(data, middle[..., :-1], middle[..., -1]))
        step = eta.diff(dim=-2)
        return torch.einsum("...i,...ij,...j->...", step, metric, step).clamp_min(_FLOOR).sqrt()

    return lengths


def _overlaps(data: DataMixture, curves: torch.Tensor) -> torch.Tensor:
    """Bhattacharyya coefficients sum_i sqrt(p_i q_i) of consecutive points' categoricals, [..., M - 1],
    from log-weights: a weight that underflows to 0 leaves a finite gradient."""
    log_w = denoising_posterior(data, curves[..., :-1], curves[..., -1]).log_weights
    return torch.exp(0.5 * (log_w[..., 1:, :] + log_w[..., :-1, :])).sum(-1)


def categorical_arc_lengths(data: DataMixture) -> SegmentLengths:
    """For an empirical model: the exact Fisher-Rao distance between the categoricals at the two ends of each
    segment, 2 arccos(sum_i sqrt(p_i q_i)) (the metric sum_i dp_i^2 / p_i; two point masses are pi apart)."""
    if bool((data.variances > 0).any()):
        raise ValueError("categorical arc lengths need an empirical model (every variance 0): DataMixture.empirical")

    def lengths(curves: torch.Tensor) -> torch.Tensor:
        return 2 * torch.arccos(_overlaps(data, curves).clamp(-1.0, 1.0))

    return lengths


def categorical_chord_lengths(data: DataMixture) -> SegmentLengths:
    """For an empirical model: the chord 2 ||sqrt(p) - sqrt(q)|| between the ends of each segment in the
    embedding p -> 2 sqrt(p), on whose sphere :func:`categorical_arc_lengths` measures arcs. Chord and arc
    agree to second order in the segment, and the squared chord 8 (1 - sum_i sqrt(p_i q_i)) is smooth even
    across a jump of the weights, which makes it the energy to minimise for the empirical model."""
    if bool((data.variances > 0).any()):
        raise ValueError("categorical chord lengths need an empirical model (every variance 0): DataMixture.empirical")

    def lengths(curves: torch.Tensor) -> torch.Tensor:
        return (8 * (1 - _overlaps(data, curves))).clamp_min(_FLOOR).sqrt()

    return lengths


def spline_basis(points: int, controls: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[points, controls] values at s = 0..1 of the interior basis functions of a clamped cubic B-spline
    with ``controls + 2`` coefficients: every column vanishes at both ends, so offsets along it keep a
    curve's end points fixed."""
    require_positive_int("controls", controls)
    if points < 3:
        raise ValueError(f"a curve needs at least 3 points, got {points}")
    degree = min(3, controls + 1)
    n = controls + 2
    knots = np.concatenate([np.zeros(degree), np.linspace(0, 1, n - degree + 1), np.ones(degree)])
    s = np.linspace(0, 1, points)
    matrix = BSpline.design_matrix(s, knots, degree).toarray()
    return torch.as_tensor(matrix[:, 1:-1], dtype=dtype)


@dataclass(frozen=True)
class SpacetimeCurves:
    """Curves between spacetime points that minimise a discretised energy (:func:`diffed_curves`)."""

    points: torch.Tensor
    """[B, M, D + 1] the optimised curves, (x, t) at M equally spaced parameters s."""
    lengths: torch.Tensor
    """[B] their Fisher-Rao lengths: the DiffED estimates."""
    straight_lengths: torch.Tensor
    """[B] the lengths of the straight segments between the same ends, for comparison."""
    energy_history: torch.Tensor
    """[steps] the energy of all curves and starts together during the minimisation (for checking convergence)."""


def straight_curves(start: torch.Tensor, end: torch.Tensor, points: int) -> torch.Tensor:
    """[B, M, D + 1] straight segments between spacetime points start, end [B, D + 1]."""
    s = torch.linspace(0, 1, points, dtype=start.dtype, device=start.device)[:, None]
    return (1 - s) * start[:, None, :] + s * end[:, None, :]


def diffed_curves(
    lengths: SegmentLengths, start: torch.Tensor, end: torch.Tensor, points: int, controls: int, steps: int,
    learning_rate: float = 0.05, initial_depths: tuple[float, ...] = (0.5, 3.0),
) -> SpacetimeCurves:
    """Minimise the discrete energy (M - 1) sum_j length_j^2 of B curves from ``start`` to ``end`` [B, D + 1]
    (spacetime points (x, t)) by Adam on B-spline offsets in (x, logit t).

    Every curve is started once for each of ``initial_depths``: the straight segment lowered by that much
    in logit t in its middle (into more noise, where the denoising distributions change smoothly). The
    energy has local minima (a curve may go around a training point through noise or pass it near the
    data), so each curve keeps its shortest result. Minimising the energy also makes the speed constant,
    so the result is a discretised geodesic and its length the DiffED estimate. The straight segments'
    lengths are returned beside it.
    """
    if start.shape != end.shape or start.ndim != 2:
        raise ValueError(f"need start and end of shape [B, D + 1]; got {tuple(start.shape)}, {tuple(end.shape)}")
    require_positive_int("steps", steps)
    for z in (start, end):
        _check_times(z[:, -1])
    if not initial_depths:
        raise ValueError("give at least one initial depth")
    basis = spline_basis(points, controls, start.dtype).to(start.device)  # [M, C]
    logit = lambda z: torch.cat([z[..., :-1], torch.logit(z[..., -1:])], dim=-1)
    starts = len(initial_depths)
    line = straight_curves(logit(start), logit(end), points).repeat(starts, 1, 1)  # [S B, M, D + 1] in (x, logit t)
    offsets = torch.zeros(len(line), controls, start.shape[1], dtype=start.dtype, device=start.device)
    offsets[..., -1] = torch.tensor(initial_depths, dtype=start.dtype).repeat_interleave(len(start))[:, None].neg()
    offsets.requires_grad_(True)
    optimiser = torch.optim.Adam([offsets], lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)

    def curves_of(params: torch.Tensor) -> torch.Tensor:
        z = line + torch.einsum("mc,bcd->bmd", basis, params)
        return torch.cat([z[..., :-1], torch.sigmoid(z[..., -1:])], dim=-1)

    history = []
    for _ in range(steps):
        optimiser.zero_grad()
        energy = (points - 1) * lengths(curves_of(offsets)).square().sum()
        if not bool(torch.isfinite(energy)):
            raise FloatingPointError("the curve energy is not finite: start the curves at times further from 0 and 1")
        energy.backward()
        optimiser.step()
        schedule.step()
        history.append(energy.item())
    with torch.no_grad():
        found = curves_of(offsets)
        found_lengths = lengths(found).sum(-1).reshape(starts, len(start))
        best = found_lengths.argmin(dim=0)
        chosen = found.reshape(starts, len(start), points, -1)[best, torch.arange(len(start))]
        return SpacetimeCurves(chosen, found_lengths.min(dim=0).values,
                               lengths(straight_curves(start, end, points)).sum(-1), torch.tensor(history))


def data_points_in_spacetime(y: torch.Tensor, t: float) -> torch.Tensor:
    """[B, D + 1] the spacetime points (t y, t) where data points y [B, D] are seen at time t (their means)."""
    _check_times(torch.tensor(t))
    return torch.cat([t * y, torch.full((len(y), 1), t, dtype=y.dtype, device=y.device)], dim=1)
