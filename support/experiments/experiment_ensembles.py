"""The Laplace ensembles of the 1D and 2D experiment chapters, as functions of (profile, generator).

Chapters 8 and 9 build their posterior ensembles with these functions, and every later chapter
that compares against them (the training-free baselines) calls the same functions in the same
order after the same seed, so it gets the same models, points and metrics by construction.

1D (App. C.1, eq 35-36): S velocities v ~ N(0, H_+^{-1}); Euclidean samples theta* + v and
Riemannian samples Exp_theta*(v) (geodesic eq 19, dopri5, over-budget curves filtered as in
App. D.3.1); every model moves the same N base points.

2D (App. C.2 and the book's full-covariance extension): all random inputs of chapter 9 are
drawn in one place, in the chapter's order, and the full-covariance ensembles come from one
geodesic solve per model with outputs at every scale eta (Exp(eta v) = alpha_v(eta)).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from ..core.geodesics import GeodesicSolution, solve_geodesics
from ..core.laplace import euclidean_samples
from ..core.parameters import ParameterLayout
from ..data.toy_data import IsotropicGMM
from ..evaluation.divergences import RepeatedEstimate, repeated_kl, wasserstein_1d
from ..infra.profiles import Experiment1DSizes, Experiment2DSizes, Profile
from ..infra.results import checkpoint_dir
from ..models.ensembles import ensemble_field, generate_ensemble
from ..models.flow_matching import generate
from .memorising_flow import FlowLaplace, MemorisingFlow

GEODESIC_BUDGET = 20_000
"""Right-hand-side evaluations of one geodesic before it is filtered (App. D.3.1)."""
KL_GRID_1D = torch.linspace(-6, 6, 2401)
"""Integration grid of KL(p_* || KDE) in 1D (the target has no mass beyond +-6)."""
KDE_RANGE_1D = 1e3
"""Generated 1D values beyond this are left out of a KDE (it overflows); the share far out is reported separately."""


@dataclass(frozen=True)
class PosteriorEnsembles:
    """Euclidean and Riemannian posterior samples from one set of initial velocities."""

    v: torch.Tensor
    """[S, K] initial velocities v ~ N(0, H_+^{-1})."""
    euclidean: torch.Tensor
    """[S, K] theta* + v."""
    geodesics: GeodesicSolution
    seconds: float
    """Wall time of the geodesic solve in this run (less when it resumed from a checkpoint)."""

    @property
    def riemannian(self) -> torch.Tensor:
        """[S', K] Exp_theta*(v) for the converged curves (the filtered ones are left out)."""
        return self.geodesics.endpoint[self.geodesics.converged]

    @property
    def filtered(self) -> int:
        """Geodesics that exceeded the evaluation budget (App. D.3.1)."""
        return int((~self.geodesics.converged).sum())


def posterior_ensembles(
    laplace: FlowLaplace, count: int, profile: Profile, generator: torch.Generator, chunk_size: int,
    checkpoint_name: str | None, times: torch.Tensor | None = None,
) -> PosteriorEnsembles:
    """Draw ``count`` velocities v ~ N(0, H_+^{-1}) and solve their geodesics (the pair, tolerances,
    compilation and worker processes of ``profile.toy_geodesics``, a step size per curve, reverse-mode
    HVPs, the evaluation budget per curve; checkpointed under the build folder when ``checkpoint_name``
    is given)."""
    v = laplace.posterior.sample(count, generator)
    checkpoint = checkpoint_dir(profile) / checkpoint_name if checkpoint_name else None
    start = time.perf_counter()
    solver = profile.toy_geodesics
    solution = solve_geodesics(laplace.loss, laplace.theta_star, v, times=times, method=solver.method, rtol=solver.rtol,
                               atol=solver.atol, hvp="reverse", chunk_size=chunk_size, max_nfe=GEODESIC_BUDGET,
                               progress=profile.name == "paper", checkpoint=checkpoint, compile_rhs=solver.compile,
                               workers=solver.workers)
    return PosteriorEnsembles(v, euclidean_samples(laplace.theta_star, v), solution, time.perf_counter() - start)


def posterior_ensembles_1d(laplace: FlowLaplace, profile: Profile, generator: torch.Generator) -> PosteriorEnsembles:
    """Draw S = ``profile.experiment_1d.posterior_samples`` velocities and solve their geodesics (App. C.1).

    With the profile's ``checkpoint`` flag the solved curves are saved under the build folder, so an
    interrupted run resumes.
    """
    sizes = profile.experiment_1d
    return posterior_ensembles(laplace, sizes.posterior_samples, profile, generator, sizes.geodesic_chunk,
                                "experiment_1d_geodesics.pt" if sizes.checkpoint else None)


def experiment_1d_samples(
    problem: MemorisingFlow,
    layout: ParameterLayout,
    ensembles: PosteriorEnsembles,
    sizes: Experiment1DSizes,
    steps: int,
    generator: torch.Generator,
    workers: int = 1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq (35-36): every model moves the same N base points with ``steps`` Euler steps.

    Returns ``(x0 [N, 1], samples)`` with samples ``target`` (S N draws of p_*), ``map`` [N, 1],
    ``euclidean`` and ``riemannian`` [S N, 1] (model by model). ``workers`` forked CPU processes share
    the ensembles' groups of models (a speed setting: the samples are the same for any count).
    """
    x0 = torch.randn(sizes.base_samples, 1, generator=generator)
    euler = dict(method="euler", steps=steps)
    generated = {
        "map": generate(problem.model, x0, **euler),
        **{name: generate_ensemble(problem.model, layout, thetas, x0, workers=workers, **euler).reshape(-1, 1)
           for name, thetas in (("euclidean", ensembles.euclidean), ("riemannian", ensembles.riemannian))},
    }
    target_samples = problem.target.sample(sizes.posterior_samples * sizes.base_samples, generator)
    return x0, {"target": target_samples, **generated}


@dataclass(frozen=True)
class FitToTarget1D:
    """How well 1D samples fit p_* (Fig. 5, right): KL with two KDE bandwidths, and exact W1."""

    kl_loo: RepeatedEstimate
    kl_scott: RepeatedEstimate
    w1: float


def fit_to_target_1d(
    samples: dict[str, torch.Tensor],
    target: IsotropicGMM,
    reference: torch.Tensor,
    sizes: Experiment1DSizes,
    generator: torch.Generator,
) -> dict[str, FitToTarget1D]:
    """KL(p_* || KDE) on ``kl_repetitions`` random subsets of ``kl_subset`` points (LOO and Scott bandwidths),
    and W1 to ``reference`` target samples, for every entry of ``samples`` in order (App. C.1).

    The subsets come from ``generator``, so the order of ``samples`` matters for reproducibility.
    """
    fit = {}
    for name, x in samples.items():
        x = x[x.abs() < KDE_RANGE_1D]
        kl = [repeated_kl(target.log_prob, x, KL_GRID_1D, sizes.kl_repetitions, sizes.kl_subset, generator, bandwidth=b)
              for b in ("loo", "scott")]
        fit[name] = FitToTarget1D(*kl, wasserstein_1d(x, reference))
    return fit


@dataclass(frozen=True)
class Experiment2DDraws:
    """Every random input of the 2D experiment chapter, drawn in the chapter's order."""

    x0: torch.Tensor
    """[points, 2] base points shared by the MAP model and every ensemble."""
    target_samples: torch.Tensor
    """[points, 2] the target sample every W1 is measured against."""
    second_target_samples: torch.Tensor
    """[points, 2] an independent target sample (the W1 noise floor)."""
    figure_base: torch.Tensor
    """[points, 2] base samples drawn for Fig. 9 only."""
    z: torch.Tensor
    """[points] standard normal coordinates along the top eigenvector, one per model."""


def draw_experiment_2d(sizes: Experiment2DSizes, target: IsotropicGMM, generator: torch.Generator) -> Experiment2DDraws:
    """Draw chapter 9's random inputs right after training; the full-covariance velocities come next."""
    x0 = torch.randn(sizes.points, 2, generator=generator)
    target_samples = target.sample(sizes.points, generator)
    second_target_samples = target.sample(sizes.points, generator)
    figure_base = torch.randn(sizes.points, 2, generator=generator)
    z = torch.randn(sizes.points, generator=generator)
    return Experiment2DDraws(x0, target_samples, second_target_samples, figure_base, z)


def generate_per_model(
    model: nn.Module, layout: ParameterLayout, thetas: torch.Tensor, starts: torch.Tensor, **options
) -> torch.Tensor:
    """Model s moves base point s (one particle per model, all models vmapped in one ODE solve)."""
    return generate(ensemble_field(model, layout, thetas), starts, **options)


@dataclass(frozen=True)
class FullCovarianceEnsembles:
    """Euclidean theta* + eta v and Riemannian Exp(eta v) at every eta, and the points they generate."""

    ensembles: PosteriorEnsembles
    """The velocities and geodesics; ``geodesics.position[k]`` is alpha_v(etas[k - 1])."""
    etas: tuple[float, ...]
    thetas: dict[tuple[str, float], torch.Tensor]
    """(method, eta) -> [S', K] models (converged curves only, for both methods)."""
    samples: dict[tuple[str, float], torch.Tensor]
    """(method, eta) -> [S' points / S, 2]: model s moves its own block of points / S base points."""


def full_covariance_ensembles_2d(
    problem: MemorisingFlow, laplace: FlowLaplace, x0: torch.Tensor, profile: Profile, generator: torch.Generator
) -> FullCovarianceEnsembles:
    """Draw v ~ N(0, H_+^{-1}) for ``full_models`` models, solve each geodesic once with outputs at
    every eta in ``etas_full``, and generate (Euler, ``euler_steps``) with each model's own base points."""
    sizes = profile.experiment_2d
    ensembles = posterior_ensembles(laplace, sizes.full_models, profile, generator, sizes.geodesic_chunk,
                                     "experiment_2d_geodesics.pt" if sizes.checkpoint else None,
                                     times=torch.tensor([0.0, *sizes.etas_full]))
    v, solution = ensembles.v, ensembles.geodesics
    converged = solution.converged
    thetas, samples = {}, {}
    for k, eta in enumerate(sizes.etas_full, start=1):
        thetas["euclidean", eta] = laplace.theta_star + eta * v[converged]
        thetas["riemannian", eta] = solution.position[k][converged]
        for name in ("euclidean", "riemannian"):
            per_point = thetas[name, eta].repeat_interleave(sizes.points // sizes.full_models, dim=0)
            samples[name, eta] = generate_per_model(problem.model, laplace.layout, per_point, x0[: len(per_point)],
                                                    method="euler", steps=sizes.euler_steps)
    return FullCovarianceEnsembles(ensembles, sizes.etas_full, thetas, samples)
