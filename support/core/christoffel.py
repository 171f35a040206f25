"""Christoffel symbols of an arbitrary metric by automatic differentiation (App. A, Def. A.1).

    Gamma^k_ij = 1/2 sum_l (G^{-1})_kl ( d_i G_jl + d_j G_li - d_l G_ij )

and the general geodesic equation (14): alpha''_k = - sum_ij alpha'_i alpha'_j Gamma^k_ij.
This forms K x K x K tensors and is meant for small K: it is the independent check on the
specialised, matrix-free eq (19) in :mod:`support.core.monge_metric`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad, jacfwd

from .monge_metric import Loss, monge_metric

MetricFn = Callable[[torch.Tensor], torch.Tensor]


def christoffel_symbols(metric_fn: MetricFn, theta: torch.Tensor) -> torch.Tensor:
    """Gamma with ``Gamma[k, i, j]`` = Gamma^k_ij at ``theta`` (shape [K]) for the metric ``metric_fn``.

    ``metric_fn(theta)`` must return the symmetric positive-definite K x K metric matrix.
    """
    if theta.ndim != 1:
        raise ValueError(f"theta must have shape [K], got {tuple(theta.shape)}")
    k = theta.shape[0]
    metric = metric_fn(theta)
    if metric.shape != (k, k):
        raise ValueError(f"metric_fn must return a [{k}, {k}] matrix, got {tuple(metric.shape)}")
    d_metric = jacfwd(metric_fn)(theta)  # d_metric[a, b, c] = d G_ab / d theta_c
    # Christoffel symbols of the first kind, indexed [l, i, j]: d_i G_jl + d_j G_li - d_l G_ij
    first_kind = (
        torch.einsum("jli->lij", d_metric) + d_metric - torch.einsum("ijl->lij", d_metric)
    )
    return 0.5 * torch.einsum("kl,lij->kij", torch.linalg.inv(metric), first_kind)


def geodesic_acceleration_from_christoffel(gamma: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """Eq (14): alpha''_k = - sum_ij Gamma^k_ij alpha'_i alpha'_j."""
    return -torch.einsum("kij,i,j->k", gamma, velocity, velocity)


def monge_metric_fn(loss: Loss) -> MetricFn:
    """theta -> G(theta) = I + grad L grad L^T as a differentiable function (for Christoffel symbols)."""
    gradient_fn = grad(loss)
    return lambda theta: monge_metric(gradient_fn(theta))
