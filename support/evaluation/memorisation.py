"""Nearest-neighbour memorisation (Sec. 2.1.3, Definition 2.1, eq 7-8, and App. D.4).

Definition 2.1: a generated x is memorised at threshold c in (0, 1) if

    ||x - x^(1)(x)||^2 <= c ||x - x^(2)(x)||^2,                                   (7)

with x^(1), x^(2) its closest and second-closest training points; eq (8) is the fraction of
memorised generated points.

K-neighbour variant (App. D.4, used for CIFAR-10, where the training set has duplicates): the
paper says it "considers the K = 10 next-closest images rather than only the second-closest"
without a formula. We read it, following Chen et al. (2024), as comparing the closest distance
with the *mean* squared distance to the K next-closest training points:

    ||x - x^(1)||^2 <= c * (1/K) sum_{k=2}^{K+1} ||x - x^(k)||^2.

K = 1 is exactly Definition 2.1. A duplicate of x^(1) then no longer makes x^(2) as close as
x^(1) and hides a copy.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..infra.validation import require_finite, require_positive_int, require_tensor

_CHUNK = 4096


def _check_inputs(generated: torch.Tensor, train: torch.Tensor, neighbours: int) -> None:
    for name, x in (("generated", generated), ("train", train)):
        if require_tensor(name, x).ndim != 2:
            raise ValueError(
                f"{name} must have shape [N, D] (use x[:, None] for 1-D data), got {tuple(x.shape)}"
            )
        if len(x) == 0:
            raise ValueError(f"{name} has no points: the memorisation ratio of an empty set is undefined")
        require_finite(name, x)
    if generated.shape[1] != train.shape[1]:
        raise ValueError(
            f"generated has dimension {generated.shape[1]} but train has {train.shape[1]}"
        )
    require_positive_int("neighbours", neighbours)
    if train.shape[0] < neighbours + 1:
        raise ValueError(
            f"need at least {neighbours + 1} training points for {neighbours} next-closest "
            f"neighbour(s), got {train.shape[0]}"
        )


def _as_thresholds(c: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    c_t = torch.as_tensor(c, dtype=like.dtype, device=like.device)
    if c_t.ndim > 1:
        raise ValueError(f"c must be a number or a 1-D tensor, got shape {tuple(c_t.shape)}")
    if not bool(((c_t > 0) & (c_t < 1)).all()):
        raise ValueError(f"every threshold c must lie in the open interval (0, 1), got {c_t.tolist()}")
    return c_t


class Neighbours(NamedTuple):
    """The nearest training points of each generated point (:func:`nearest_neighbours`)."""

    d1: torch.Tensor
    """[N] squared distance ||x - x^(1)||^2 to the closest training point."""
    d_ref: torch.Tensor
    """[N] the reference it is compared with: mean of ||x - x^(k)||^2 over k = 2..neighbours+1."""
    index: torch.Tensor
    """[N] index of the closest training point x^(1)."""


def nearest_neighbours(generated: torch.Tensor, train: torch.Tensor, neighbours: int = 1) -> Neighbours:
    """Squared distance to the closest training point, the reference distance it is compared with
    (eq 7; for ``neighbours=1`` simply ||x - x^(2)||^2), and the closest point's index.

    Computed in float64 (float32 squares overflow to inf beyond |x| ~ 1e19, and inf <= c * inf would
    count as memorised), in chunks of generated points, so N x M distance matrices never exceed a few
    MB per D. Distances that overflow even in float64 raise.
    """
    _check_inputs(generated, train, neighbours)
    generated = generated.to(torch.float64)
    train = train.to(generated)
    d1_parts, ref_parts, index_parts = [], [], []
    for chunk in generated.split(_CHUNK):
        # Direct differences, not the |x|^2 + |y|^2 - 2 x.y matrix trick: exact copies must give
        # exactly 0 (Def. 2.1 counts them via 0 <= c * 0), which the trick's rounding breaks.
        sq = torch.cdist(chunk, train, compute_mode="donot_use_mm_for_euclid_dist").square()
        nearest = torch.topk(sq, neighbours + 1, dim=1, largest=False)  # sorted ascending
        d1_parts.append(nearest.values[:, 0])
        ref_parts.append(nearest.values[:, 1:].mean(dim=1))
        index_parts.append(nearest.indices[:, 0])
    d1, d_ref = torch.cat(d1_parts), torch.cat(ref_parts)
    if not bool(torch.isfinite(d_ref).all()):
        raise ValueError("squared distances overflow float64: the points are too far apart (beyond ~1e154) for "
                         "Definition 2.1 to compare them; clip or drop the diverged points first")
    return Neighbours(d1, d_ref, torch.cat(index_parts))


def neighbour_distances(
    generated: torch.Tensor, train: torch.Tensor, neighbours: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d1, d_ref)`` of :func:`nearest_neighbours`, each of shape [N]."""
    found = nearest_neighbours(generated, train, neighbours)
    return found.d1, found.d_ref


def memorised_from(d1: torch.Tensor, d_ref: torch.Tensor, c: float | torch.Tensor = 1 / 3) -> torch.Tensor:
    """Definition 2.1 (eq 7) from the distances of :func:`nearest_neighbours`: bool [N], or [len(c), N] if c is 1-D."""
    c_t = _as_thresholds(c, d1)
    # Compare d1 <= c * d_ref directly rather than the ratio d1 / d_ref: no 0/0 for exact duplicates.
    if c_t.ndim == 0:
        return d1 <= c_t * d_ref
    return d1[None, :] <= c_t[:, None] * d_ref[None, :]


def is_memorised(
    generated: torch.Tensor, train: torch.Tensor, c: float | torch.Tensor = 1 / 3, neighbours: int = 1
) -> torch.Tensor:
    """Definition 2.1 per generated point: a bool tensor [N], or [len(c), N] if c is 1-D."""
    d1, d_ref = neighbour_distances(generated, train, neighbours)
    return memorised_from(d1, d_ref, c)


def memorisation_ratio(
    generated: torch.Tensor, train: torch.Tensor, c: float | torch.Tensor = 1 / 3, neighbours: int = 1
) -> torch.Tensor:
    """Eq (8): fraction of generated points that are memorised at threshold c.

    Parameters
    ----------
    generated:
        [N, D] generated points.
    train:
        [M, D] training points, M >= neighbours + 1.
    c:
        A threshold in (0, 1), or a 1-D tensor of thresholds (one ratio per entry, computed from
        one distance pass).
    neighbours:
        1 for Definition 2.1; K for the K-neighbour variant of App. D.4 (see module docstring).

    Returns
    -------
    A 0-d tensor, or a tensor of shape [len(c)].
    """
    memorised = is_memorised(generated, train, c, neighbours)
    # the count over the number of points: the same value as the mean of the 0/1 values in float64 (an exact
    # integer sum, then one division), without an [len(c), N] float64 copy (1.6 GB for 198 thresholds, 1M points)
    return memorised.sum(dim=-1, dtype=torch.float64) / memorised.shape[-1]


def copy_fraction(generated: torch.Tensor, train: torch.Tensor, tolerance: float = 1e-6) -> float:
    """Share of generated points within ``tolerance`` (Euclidean) of a training point: exact copies.

    Unlike eq (8) this needs no second neighbour and no threshold c; it separates a generator that
    returns the training points themselves (the closed-form field) from one that only lands near them.
    """
    if tolerance <= 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    d1, _ = neighbour_distances(generated, train)
    return (d1 <= tolerance**2).to(generated.dtype).mean().item()


def memorised_interval(distance: float, c: float) -> tuple[float, float]:
    """Memorised set around x^(1) on the line through two training points (Def. 2.1, eq 7).

    With x^(1) at 0 and x^(2) at ``distance`` > 0 on a line, a point at signed offset s is
    memorised iff s^2 <= c (distance - s)^2, i.e. s in [-sqrt(c) L / (1 - sqrt(c)), sqrt(c) L / (1 + sqrt(c))]
    with L = distance. Returns those two offsets. Used as a closed-form oracle (and for Thm 4.1).
    """
    if distance <= 0:
        raise ValueError(f"distance between the training points must be positive, got {distance}")
    if not 0 < c < 1:
        raise ValueError(f"c must lie in (0, 1), got {c}")
    root = c**0.5
    return -root * distance / (1 - root), root * distance / (1 + root)


def theorem_4_1_window(
    d1: torch.Tensor | float, d2: torch.Tensor | float, c: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Displacements that un-memorise a point (Theorem 4.1, consistent form; App. B.1).

    A generated point x_hat at distance ``d1`` from its nearest training point x^(1) and ``d2``
    (>= d1) from the second x^(2), all three on one line, moves by delta straight towards
    x^(2). With Definition 2.1 read as squared distances (eq 7-8: d1^2 <= c d2^2, i.e.
    d1 <= sqrt(c) d2), the moved point is *not* memorised iff

        (sqrt(c) d2 - d1) / (1 + sqrt(c)) < ||delta|| < (d2 - sqrt(c) d1) / (1 + sqrt(c)).

    Returns ``(lower, upper)``. A negative ``lower`` means x_hat is not memorised to begin with.
    The window's width (1 - sqrt(c)) (d1 + d2) / (1 + sqrt(c)) depends only on d1 + d2.
    """
    d1_t, d2_t = torch.as_tensor(d1, dtype=torch.float64), torch.as_tensor(d2, dtype=torch.float64)
    if bool((d1_t < 0).any()) or bool((d2_t < d1_t).any()):
        raise ValueError("need 0 <= d1 <= d2 (d1: nearest training point, d2: second nearest)")
    if not 0 < c < 1:
        raise ValueError(f"c must lie in (0, 1), got {c}")
    root = c**0.5
    return (root * d2_t - d1_t) / (1 + root), (d2_t - root * d1_t) / (1 + root)
