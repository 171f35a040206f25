"""Exact likelihood of a flow generator and the posterior predictive density (Sec. 3.1, eq 22).

For a fixed theta the flow of eq (2) is invertible, and the instantaneous change of variables
(Chen et al., 2018) gives the log-density of a generated point x1:

    log p(x1 | theta) = log p0(x(0)) - int_0^1 div u_theta(x(t), t) dt,

where x(t) solves dx/dt = u_theta(x, t) backwards from x(1) = x1. We integrate the augmented
state (x, int div) from t = 1 to t = 0 with torchdiffeq. The divergence is exact (D reverse-mode
products, cheap in 1D and 2D) or Hutchinson's unbiased estimate eps^T (du/dx) eps with Rademacher
eps (one product, for images).

The posterior predictive density of eq (22) averages the S models' densities,
p(x | D) ~ (1/S) sum_s p(x | theta_s), computed as a log-mean-exp; the gap between it and the
members' mean log-density is a map of where the models disagree (generative uncertainty).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from torchdiffeq import odeint

from ..core.parameters import ParameterLayout
from .ensembles import ensemble_field
from .flow_matching import VelocityField

DivergenceMethod = Literal["exact", "hutchinson"]


def velocity_and_divergence(
    velocity: VelocityField,
    x: torch.Tensor,
    t: torch.Tensor,
    method: DivergenceMethod = "exact",
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """u(x, t) [B, D] and div_x u(x, t) [B] per row of x, for a field that acts on each row independently.

    Both come from one forward pass and reverse-mode products: since row b of u depends on row b of
    x only, the gradient of sum_b u_d(x_b) with respect to x holds d u_d / d x_d of every row.
    ``exact`` takes D such backward passes (the Jacobian diagonal); ``hutchinson`` takes one,
    noise^T J noise for the given Rademacher ``noise`` [B, D] (its expectation is the divergence).
    On a CPU this measured 2.3x faster than D forward-mode ``torch.func.jvp`` calls plus a separate
    forward pass (3.6 vs 8.4 ms for 5,000 points of the 2D toy network).
    """
    if x.ndim != 2:
        raise ValueError(f"x must have shape [B, D], got {tuple(x.shape)}")
    if method not in ("exact", "hutchinson"):
        raise ValueError(f"method must be 'exact' or 'hutchinson', got {method!r}")
    if method == "hutchinson" and (noise is None or noise.shape != x.shape):
        raise ValueError(f"hutchinson needs noise of the shape of x {tuple(x.shape)}")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        u = velocity(x, t)
        if method == "hutchinson":
            (vjp,) = torch.autograd.grad(u, x, grad_outputs=noise)
            return u.detach(), (vjp * noise).sum(dim=1)
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for d in range(x.shape[1]):
            (row_gradient,) = torch.autograd.grad(u[:, d].sum(), x, retain_graph=d + 1 < x.shape[1])
            total = total + row_gradient[:, d]
    return u.detach(), total


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I) per row of x [B, D]."""
    return -0.5 * x.square().sum(dim=1) - 0.5 * x.shape[1] * math.log(2 * math.pi)


def flow_log_likelihood(
    velocity: VelocityField,
    x1: torch.Tensor,
    base_log_prob: Callable[[torch.Tensor], torch.Tensor] = standard_normal_log_prob,
    method: str = "dopri5",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    steps: int = 100,
    divergence_method: DivergenceMethod = "exact",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """log p(x1 | theta) for every row of x1 [B, D] by the instantaneous change of variables (Sec. 3.1).

    ``method`` is a torchdiffeq solver: ``dopri5`` (adaptive, ``rtol``/``atol``) or a fixed-step
    one (``rk4``, ``euler``) with ``steps`` uniform steps. With ``divergence_method="hutchinson"``
    one Rademacher vector per row is drawn from ``generator`` and held fixed along the path.
    Raises on non-finite results (a field that blows up along the reverse path).
    """
    if x1.ndim != 2 or x1.shape[0] == 0:
        raise ValueError(f"x1 must have shape [B, D] with B >= 1, got {tuple(x1.shape)}")
    if not bool(torch.isfinite(x1).all()):
        bad = (~torch.isfinite(x1).all(dim=1)).nonzero().flatten()[:10].tolist()
        raise ValueError(f"x1 has non-finite values in rows {bad}: a density is only defined at finite points")
    if method == "dopri5":
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"dopri5 needs positive rtol and atol, got rtol={rtol}, atol={atol}")
    elif not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"the fixed-step method {method!r} needs a positive integer number of steps, got {steps!r}")
    n, d = x1.shape
    noise = None
    if divergence_method == "hutchinson":
        noise = (torch.randint(0, 2, x1.shape, generator=generator, dtype=torch.int64) * 2 - 1).to(x1)

    def rhs(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        x = state[:, :d]
        u, div = velocity_and_divergence(velocity, x, t.expand(n), divergence_method, noise)
        return torch.cat([u, -div[:, None]], dim=1)

    state1 = torch.cat([x1, torch.zeros(n, 1, dtype=x1.dtype, device=x1.device)], dim=1)
    times = torch.tensor([1.0, 0.0], dtype=x1.dtype, device=x1.device)
    options = {"rtol": rtol, "atol": atol} if method == "dopri5" else {"options": {"step_size": 1.0 / steps}}
    with torch.no_grad():
        state0 = odeint(rhs, state1, times, method=method, **options)[-1]
    # state0[:, d] = int_1^0 (-div) dt = int_0^1 div dt
    log_prob = base_log_prob(state0[:, :d]) - state0[:, d]
    if not bool(torch.isfinite(log_prob).all()):
        bad = (~torch.isfinite(log_prob)).nonzero().flatten()[:10].tolist()
        raise FloatingPointError(f"non-finite log-likelihood for rows {bad}: the field blows up along the reverse path")
    return log_prob


def ensemble_log_likelihoods(
    model: nn.Module,
    layout: ParameterLayout,
    thetas: torch.Tensor,
    x: torch.Tensor,
    models_per_solve: int = 16,
    **likelihood_options,
) -> torch.Tensor:
    """log p(x | theta_s) for every model s and every row of x [N, D] -> [S, N].

    Models are vmapped together, ``models_per_solve`` per reverse solve; ``likelihood_options``
    are those of :func:`flow_log_likelihood`.
    """
    if thetas.ndim != 2 or thetas.shape[1] != layout.dim:
        raise ValueError(f"thetas must have shape [S, {layout.dim}], got {tuple(thetas.shape)}")
    if models_per_solve < 1:
        raise ValueError(f"models_per_solve must be positive, got {models_per_solve}")
    blocks = []
    for block in thetas.split(models_per_solve):
        field = ensemble_field(model, layout, block)
        blocks.append(flow_log_likelihood(field, x.repeat(block.shape[0], 1), **likelihood_options).reshape(-1, len(x)))
    return torch.cat(blocks)


def posterior_predictive_log_density(member_log_likelihoods: torch.Tensor) -> torch.Tensor:
    """Eq (22) from the members' log-densities [S, N]: log (1/S) sum_s p(x | theta_s) -> [N]."""
    if member_log_likelihoods.ndim != 2 or member_log_likelihoods.shape[0] == 0:
        raise ValueError(f"need log-likelihoods of shape [S, N] with S >= 1 models, got "
                         f"{tuple(member_log_likelihoods.shape)}")
    return torch.logsumexp(member_log_likelihoods, dim=0) - math.log(member_log_likelihoods.shape[0])


def generative_uncertainty(member_log_likelihoods: torch.Tensor) -> torch.Tensor:
    """Disagreement of the models at x: log p(x | D) - mean_s log p(x | theta_s) >= 0 (Jensen) -> [N].

    Zero where all models agree on the density at x; large where some models put mass at x and
    others do not (the log-density analogue of the ensemble variance of Fig. 4).
    """
    return posterior_predictive_log_density(member_log_likelihoods) - member_log_likelihoods.mean(dim=0)
