"""The phases of a flow's latent plane and its local Lipschitz constant (after Lobashev et al., 2025).

A memorising flow g: x0 -> x1 (K uniform Euler steps of eq 2, as ``generate`` takes them) splits its
latent space into *phases*: the sets of x0 whose samples end nearest to each memorised point. A map
from a unimodal latent distribution onto disjoint modes must stretch space somewhere; Lobashev et al.
argue that its Lipschitz constant diverges on the phase boundaries. The local Lipschitz constant at
x0 is the largest singular value of the Jacobian d x1 / d x0 (:func:`flow_endpoints_and_jacobians`,
forward mode through the Euler steps: one jvp per latent dimension, every point at once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import jvp

from ..infra.validation import require_positive_int

VelocityField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euler_endpoints(velocity: VelocityField, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """x1 from x0 [N, D] by ``steps`` uniform Euler steps of dx/dt = u(x, t) over [0, 1] (eq 2)."""
    require_positive_int("steps", steps)
    h = 1.0 / steps
    x = x0
    for k in range(steps):
        t = torch.full((len(x),), k * h, dtype=x.dtype, device=x.device)
        x = x + h * velocity(x, t)
    return x


def flow_endpoints_and_jacobians(velocity: VelocityField, x0: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x1 [N, D], d x1 / d x0 [N, D, D]) for every row of x0 [N, D].

    The field acts on each row separately, so a jvp with the tangent e_d in every row gives column d
    of every row's Jacobian: D forward-mode passes for all N points.
    """
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape [N, D], got {tuple(x0.shape)}")
    columns, endpoints = [], None
    for d in range(x0.shape[1]):
        tangent = torch.zeros_like(x0)
        tangent[:, d] = 1
        endpoints, column = jvp(lambda x: euler_endpoints(velocity, x, steps), (x0,), (tangent,))
        columns.append(column)
    return endpoints, torch.stack(columns, dim=-1)


def lipschitz_constants(jacobians: torch.Tensor) -> torch.Tensor:
    """[N] largest singular values of jacobians [N, D, D]: the local Lipschitz constants."""
    return torch.linalg.matrix_norm(jacobians, ord=2)


def nearest_phase(endpoints: torch.Tensor, train_points: torch.Tensor) -> torch.Tensor:
    """[N] index of the training point nearest to each endpoint [N, D]: its phase."""
    return torch.cdist(endpoints, train_points.to(endpoints)).argmin(dim=1)


def phase_boundaries(labels: torch.Tensor) -> torch.Tensor:
    """bool [H, W]: grid points with a horizontal or vertical neighbour in another phase."""
    if labels.ndim != 2:
        raise ValueError(f"labels must be a grid [H, W], got {tuple(labels.shape)}")
    boundary = torch.zeros_like(labels, dtype=torch.bool)
    vertical = labels[1:] != labels[:-1]
    horizontal = labels[:, 1:] != labels[:, :-1]
    boundary[1:] |= vertical
    boundary[:-1] |= vertical
    boundary[:, 1:] |= horizontal
    boundary[:, :-1] |= horizontal
    return boundary


@dataclass(frozen=True)
class PhaseMap:
    """A flow's phases and local Lipschitz constants on a square latent grid."""

    axis: torch.Tensor
    """[P] grid coordinates along each latent axis."""
    labels: torch.Tensor
    """[P, P] phase (nearest training point of x1) of each grid point; row i is axis[i] in x0_2."""
    lipschitz: torch.Tensor
    """[P, P] largest singular value of d x1 / d x0."""
    boundary: torch.Tensor
    """bool [P, P]: grid points next to another phase."""

    def share_of_phase_changes(self, other: PhaseMap) -> float:
        """Share of grid points whose phase differs from ``other``'s (how far the boundaries moved)."""
        if self.labels.shape != other.labels.shape:
            raise ValueError("the two phase maps are on different grids")
        return (self.labels != other.labels).double().mean().item()


def phase_map(velocity: VelocityField, train_points: torch.Tensor, half_width: float, points: int, steps: int) -> PhaseMap:
    """Phases and Lipschitz constants of the flow on the grid [-half_width, half_width]^2 of ``points`` per axis."""
    if train_points.ndim != 2 or train_points.shape[1] != 2:
        raise ValueError(f"phase maps are drawn for 2D flows; got training points {tuple(train_points.shape)}")
    require_positive_int("points", points)
    axis = torch.linspace(-half_width, half_width, points, dtype=train_points.dtype, device=train_points.device)
    second, first = torch.meshgrid(axis, axis, indexing="ij")
    x0 = torch.stack([first.flatten(), second.flatten()], dim=1)
    with torch.no_grad():
        endpoints, jacobians = flow_endpoints_and_jacobians(velocity, x0, steps)
    labels = nearest_phase(endpoints, train_points).reshape(points, points)
    return PhaseMap(axis, labels, lipschitz_constants(jacobians).reshape(points, points), phase_boundaries(labels))
