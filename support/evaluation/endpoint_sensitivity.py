"""How a parameter perturbation moves one generated point (Sec. 4.1, eq 23-24; App. C.1.1).

For a fixed x0 the generator is a function of the perturbation v,

    phi_{x0}(v) = g_{theta* + v}(x0),

and a second-order expansion around v = 0 with v ~ N(0, eta^2 Sigma) gives (Sec. 4.1)

    E[phi] ~ phi(0) + (eta^2 / 2) tr(d2phi Sigma)          (bias, second order)
    Var[phi] ~ eta^2 J Sigma J^T,   J = dphi/dv at 0       (variance, first order).

``endpoint_map`` builds phi as an explicit Euler loop (the same scheme as
``generate(method="euler")``; torchdiffeq's solvers write in place and cannot be differentiated by
``torch.func``), so J comes from ``jacrev`` and tr(d2phi Sigma) from forward-over-forward second
directional derivatives along the r columns of Sigma^{1/2} = U Lambda^{-1/2}: no K x K matrix.
``monte_carlo_moments`` is the independent check, with antithetic pairs (v, -v): their mean
cancels the odd terms of the expansion exactly, so the bias, an O(eta^2) effect, is not drowned
by the O(eta / sqrt(n)) sampling noise of a plain average.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import jacrev, jvp, vmap

from ..core.laplace import LowRankLaplace
from ..core.parameters import ParameterLayout, functional_forward

EndpointMap = Callable[[torch.Tensor], torch.Tensor]


def endpoint_map(
    model: nn.Module, layout: ParameterLayout, theta_star: torch.Tensor, x0: torch.Tensor, steps: int
) -> EndpointMap:
    """phi(v) = g_{theta*+v}(x0) with ``steps`` uniform Euler steps on [0, 1]; x0 [N, D] -> [N, D]."""
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape [N, D], got {tuple(x0.shape)}")
    if theta_star.shape != (layout.dim,):
        raise ValueError(f"theta_star must have shape [{layout.dim}], got {tuple(theta_star.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    h = 1.0 / steps

    def phi(v: torch.Tensor) -> torch.Tensor:
        field = functional_forward(model, layout, theta_star + v)
        x = x0
        for i in range(steps):
            t = torch.full(x.shape[:1], i * h, dtype=x.dtype, device=x.device)
            x = x + h * field(x, t)
        return x

    return phi


@dataclass(frozen=True)
class EndpointMoments:
    """Bias E[phi] - phi(0) and variance of the endpoint (per output coordinate)."""

    bias: torch.Tensor
    variance: torch.Tensor
    bias_se: torch.Tensor | None = None
    """Monte Carlo standard errors (None for the Taylor predictions)."""
    variance_se: torch.Tensor | None = None


def taylor_moments(phi: EndpointMap, posterior: LowRankLaplace, scale: float = 1.0) -> EndpointMoments:
    """Second-order bias and first-order variance of phi(v), v ~ N(0, scale^2 Sigma) (Sec. 4.1)."""
    if posterior.prior_precision != 0:
        raise ValueError("taylor_moments needs the low-rank posterior (prior_precision = 0)")
    zero = torch.zeros(posterior.dim, dtype=posterior.eigenvectors.dtype, device=posterior.eigenvectors.device)
    root = posterior.eigenvectors * posterior.eigenvalues.rsqrt()  # Sigma^{1/2}: [K, r]
    jac = jacrev(phi)(zero)  # [N, D, K]
    shape = jac.shape[:-1]
    projected = jac.flatten(0, -2) @ root
    variance = scale**2 * projected.square().sum(dim=1)

    def second_directional(w: torch.Tensor) -> torch.Tensor:
        return jvp(lambda u: jvp(phi, (u,), (w,))[1], (zero,), (w,))[1]

    curvature = vmap(second_directional, in_dims=1)(root).sum(dim=0).flatten()
    return EndpointMoments(bias=(0.5 * scale**2 * curvature).reshape(shape), variance=variance.reshape(shape))


def monte_carlo_moments(phi: EndpointMap, v: torch.Tensor) -> EndpointMoments:
    """Bias and variance of phi over the antithetic sample {v_i, -v_i} (v: [n, K], n >= 2)."""
    if v.ndim != 2 or len(v) < 2:
        raise ValueError(f"v must have shape [n, K] with n >= 2, got {tuple(v.shape)}")
    batched = vmap(phi)
    centre = phi(torch.zeros_like(v[0]))
    plus, minus = batched(v), batched(-v)
    pair_means = 0.5 * (plus + minus) - centre
    both = torch.cat([plus, minus])
    mean = both.mean(dim=0)
    # the two members of a pair are dependent: standard errors are over the n independent pairs
    pair_deviations = 0.5 * ((plus - mean).square() + (minus - mean).square())
    n = len(v)
    return EndpointMoments(
        bias=pair_means.mean(dim=0),
        variance=both.var(dim=0),
        bias_se=pair_means.std(dim=0) / n**0.5,
        variance_se=pair_deviations.std(dim=0) / n**0.5,
    )
