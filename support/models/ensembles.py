"""Posterior ensembles: S parameter samples of one network evaluated at once (vmap, no Python loop).

Given a model, a :class:`~support.core.parameters.ParameterLayout` and stacked flat parameters
thetas [S, K], the ensemble's velocity fields are evaluated with ``torch.func.vmap`` over
``functional_call``, and generation (eq 2) solves one ODE whose state holds the particles of many
models at once. This is how the N x S generated points of eq (35)-(36) are produced.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import vmap

from ..core.parameters import ParameterLayout, functional_forward
from ..infra.forked_map import forked_map
from .flow_matching import VelocityField, generate


def ensemble_field(model: nn.Module, layout: ParameterLayout, thetas: torch.Tensor) -> VelocityField:
    """Velocity field of S models on a flattened batch: x [S*N, D], t [S*N] -> [S*N, D].

    Rows s*N .. (s+1)*N - 1 of x are the particles of model s.
    """
    if thetas.ndim != 2 or thetas.shape[1] != layout.dim:
        raise ValueError(f"thetas must have shape [S, {layout.dim}], got {tuple(thetas.shape)}")
    n_models = thetas.shape[0]
    one_model = vmap(lambda theta, x, t: functional_forward(model, layout, theta)(x, t))

    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % n_models:
            raise ValueError(f"batch of {x.shape[0]} particles is not divisible by {n_models} models")
        out = one_model(thetas, x.reshape(n_models, -1, x.shape[-1]), t.reshape(n_models, -1))
        return out.reshape(x.shape)

    return field


def ensemble_velocity(
    model: nn.Module, layout: ParameterLayout, thetas: torch.Tensor, x: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """u_{theta_s}(x, t) for every model s and every point: x [N, D], t [N] -> [S, N, D]."""
    n_models = thetas.shape[0]
    field = ensemble_field(model, layout, thetas)
    with torch.no_grad():
        out = field(x.repeat(n_models, 1), t.repeat(n_models))
    return out.reshape(n_models, *x.shape)


def generate_ensemble(
    model: nn.Module,
    layout: ParameterLayout,
    thetas: torch.Tensor,
    x0: torch.Tensor,
    particles_per_solve: int | None = 16384,
    workers: int = 1,
    **generate_options,
) -> torch.Tensor:
    """g_{theta_s}(x0_i) for all S models and N base points: [S, N, D] (or [T, S, N, D] with ``times``).

    Models are vmapped together in groups of about ``particles_per_solve / N`` models, each group
    one batched solve of eq (2) (``None``: all S models in one solve). On a CPU the step is
    memory-bound, and ~16k particles per solve measured fastest (``benchmarks/laplace.py``); on a
    GPU a larger value (or ``None``) is better. ``workers`` forked CPU processes share the groups
    (:func:`support.infra.forked_map.forked_map`; the same result as one). ``generate_options`` are
    those of :func:`support.models.flow_matching.generate`.
    """
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape [N, D], got {tuple(x0.shape)}")
    if particles_per_solve is not None and particles_per_solve < 1:
        raise ValueError(f"particles_per_solve must be positive, got {particles_per_solve}")
    if workers > 1 and thetas.device.type != "cpu":
        raise ValueError(f"workers = {workers} forks processes, which CUDA does not survive; on {thetas.device} "
                         "use workers = 1 (and particles_per_solve = None)")
    group = thetas.shape[0] if particles_per_solve is None else max(1, particles_per_solve // x0.shape[0])

    def solve_group(block: torch.Tensor) -> torch.Tensor:
        out = generate(ensemble_field(model, layout, block), x0.repeat(block.shape[0], 1), **generate_options)
        return out.reshape(*out.shape[:-2], block.shape[0], *x0.shape)

    return torch.cat(forked_map(solve_group, thetas.split(group), workers), dim=-3)


def ensemble_field_std(
    model: nn.Module,
    layout: ParameterLayout,
    thetas: torch.Tensor,
    x: torch.Tensor,
    t: torch.Tensor,
    particles_per_chunk: int = 32768,
) -> torch.Tensor:
    """Standard deviation over the S models of u_{theta_s}(x, t) per point (Fig. 4, right): [N, D].

    Models are evaluated in chunks of about ``particles_per_chunk / N`` models (at least one), so that
    S x N never has to fit in memory at once and one vmapped evaluation stays near the cache size: on
    this CPU chapter 8's paper grid (N = 12,221, S = 1,000) took 13 s a method in chunks of 64 models
    and 4-5 s in chunks of 1 to 8.
    """
    if particles_per_chunk < 1:
        raise ValueError(f"particles_per_chunk must be positive, got {particles_per_chunk}")
    if thetas.shape[0] < 2:
        raise ValueError("need at least two models for a standard deviation")
    models_per_chunk = max(1, particles_per_chunk // len(x))
    velocities = torch.cat(
        [ensemble_velocity(model, layout, block, x, t) for block in thetas.split(models_per_chunk)]
    )
    return velocities.std(dim=0)
