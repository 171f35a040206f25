"""The toy experiments' headline results under other choices of the positive part H_+ (App. D.2).

The exact Hessian of a memorising flow at theta* has hundreds of eigenvalues of both signs near
zero, and its positive eigenvalues run without a gap down to rounding level, so "keep lambda > 0"
(App. D.2) leaves the variance 1/lambda of v ~ N(0, H_+^{-1}) unbounded. The book
keeps the eigenpairs above a floor of 1e-3 lambda_1 (``memorising_flow.RELATIVE_EIGENVALUE_FLOOR``);
this module reruns the 1D (Sec. 5.1) and 2D (App. C.2) experiments under other choices:

* a floor tau: keep the eigenpairs with lambda > tau, v has no component along the others;
* a prior precision delta (a Gaussian prior N(0, delta^-1 I) on theta): keep every positive
  eigenpair with precision lambda + delta, and give every other direction the prior variance 1/delta.

For each choice, S velocities give S Euclidean models theta* + v and S Riemannian models
Exp_theta*(v) (eq 19, dopri5, over-budget curves filtered as in App. D.3.1); every model moves the
same N base points, and its memorisation ratio (eq 8) and W1 to the target (eq 38) are computed per
model, so that means and standard errors are over models (``evaluation.ensemble_statistics``).

:func:`sweep_results` turns a sweep into the chapter's results file, and :func:`comparisons` computes the
sweep's one-sided Mann-Whitney tests from the per-model values in such a file, so that the chapter reads the
live run and a committed paper-profile run (``support.infra.paper_artefacts``) through the same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats

from ..core.laplace import LowRankLaplace, positive_part
from ..evaluation.divergences import RepeatedEstimate, wasserstein_1
from ..evaluation.ensemble_statistics import per_model
from ..evaluation.memorisation import memorisation_ratio
from ..infra.profiles import PositivePartSizes, Profile
from ..models.ensembles import generate_ensemble
from ..models.flow_matching import generate
from .experiment_ensembles import KDE_RANGE_1D, posterior_ensembles
from .memorising_flow import FlowLaplace, MemorisingFlow

MEMORISATION_THRESHOLD = 0.01
"""The threshold c of eq (8) of the headline memorisation ratios (chapters 8 and 9 lead with it)."""


@dataclass(frozen=True)
class PositivePartChoice:
    """One way of turning the indefinite Hessian into N(0, H_+^{-1}), relative to its largest eigenvalue."""

    kind: Literal["floor", "prior"]
    relative: float
    """tau / lambda_1 for a floor, delta / lambda_1 for a prior precision."""

    def __post_init__(self) -> None:
        if self.kind not in ("floor", "prior"):
            raise ValueError(f"kind must be 'floor' or 'prior', got {self.kind!r}")
        if not self.relative > 0:
            raise ValueError(f"relative must be positive (a floor of 0 keeps eigenvalues at rounding level, whose "
                             f"variance 1 / lambda is unbounded), got {self.relative}")

    @property
    def label(self) -> str:
        symbol = "tau" if self.kind == "floor" else "delta"
        return f"{self.kind} {symbol} = {self.relative:g} lambda_1"

    def laplace(self, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor) -> LowRankLaplace:
        """N(0, H_+^{-1}) from the descending eigenpairs of the exact Hessian under this choice."""
        threshold = self.relative * eigenvalues[0].item()
        if self.kind == "floor":
            return positive_part(eigenvalues, eigenvectors, min_eigenvalue=threshold)
        return positive_part(eigenvalues, eigenvectors, min_eigenvalue=0.0, prior_precision=threshold)


def choices(sizes: PositivePartSizes) -> list[PositivePartChoice]:
    """The profile's floors, then its prior precisions, each in the order given."""
    return ([PositivePartChoice("floor", f) for f in sizes.floors]
            + [PositivePartChoice("prior", d) for d in sizes.prior_precisions])


@dataclass(frozen=True)
class ChoiceResult:
    """The headline results of one experiment under one positive part."""

    choice: PositivePartChoice
    rank: int
    """Eigenpairs kept with their own precision (all positive ones for a prior)."""
    velocity_norm: float
    """Median ||v|| over the S velocities."""
    filtered: int
    """Geodesics over the evaluation budget, left out of the Riemannian statistics (App. D.3.1)."""
    loss: dict[str, RepeatedEstimate]
    """Method -> L(theta) of each of its models (Euclidean theta* + v, Riemannian Exp_theta*(v))."""
    memorisation_gap: dict[str, RepeatedEstimate]
    """Method -> per-model memorisation ratio at c = 0.01 minus the MAP's on the same base points."""
    w1: dict[str, RepeatedEstimate]
    """Method -> per-model W1 to the target sample (points clamped to +-KDE_RANGE_1D per coordinate)."""
    far_out: dict[str, float]
    """Method -> share of its points beyond +-KDE_RANGE_1D or not finite (clamped to the range, not dropped)."""
    seconds: float
    """Wall time of the geodesic solve in this run."""


@dataclass(frozen=True)
class SweepReference:
    """What every choice is compared with: the MAP model's points and the target sample."""

    x0: torch.Tensor
    """[N, D] base points every model moves."""
    target_samples: torch.Tensor
    """[N, D] target points every W1 is measured against."""
    map_memorisation: float
    map_w1: float
    target_w1: float
    """W1 between two independent target samples of N points: the W1 noise floor."""


def sweep_reference(problem: MemorisingFlow, sizes: PositivePartSizes, euler_steps: int,
                    generator: torch.Generator) -> SweepReference:
    """Draw the base points and two target samples (in that order) and score the MAP model on them."""
    dim = problem.train_points.shape[1]
    x0 = torch.randn(sizes.base_samples, dim, generator=generator)
    target_samples = problem.target.sample(sizes.base_samples, generator)
    second_target = problem.target.sample(sizes.base_samples, generator)
    map_points = generate(problem.model, x0, method="euler", steps=euler_steps)
    return SweepReference(
        x0, target_samples,
        memorisation_ratio(map_points, problem.train_points, MEMORISATION_THRESHOLD).item(),
        wasserstein_1(map_points, target_samples), wasserstein_1(second_target, target_samples),
    )


def run_choice(
    problem: MemorisingFlow,
    laplace: FlowLaplace,
    choice: PositivePartChoice,
    reference: SweepReference,
    profile: Profile,
    euler_steps: int,
    generator: torch.Generator,
    checkpoint_name: str | None = None,
) -> ChoiceResult:
    """Draw S velocities under ``choice``, solve their geodesics, generate with every model and score it."""
    sizes = profile.positive_part
    posterior = choice.laplace(laplace.eigenvalues, laplace.eigenvectors)
    ensembles = posterior_ensembles(replace(laplace, posterior=posterior), sizes.models, profile, generator,
                                    sizes.geodesic_chunk, checkpoint_name if sizes.checkpoint else None)
    thetas = {"euclidean": ensembles.euclidean, "riemannian": ensembles.riemannian}
    memorisation_gap, w1, loss, far_out = {}, {}, {}, {}
    for name, models in thetas.items():
        points = generate_ensemble(problem.model, laplace.layout, models, reference.x0, method="euler",
                                   steps=euler_steps).reshape(-1, reference.x0.shape[1])
        far = ~(points.abs() < KDE_RANGE_1D).all(dim=1)  # also True where a coordinate is NaN
        far_out[name] = far.double().mean().item()
        points = points.nan_to_num(nan=KDE_RANGE_1D).clamp(-KDE_RANGE_1D, KDE_RANGE_1D)
        memorisation_gap[name] = per_model(points, len(models), lambda x: memorisation_ratio(
            x, problem.train_points, MEMORISATION_THRESHOLD).item() - reference.map_memorisation)
        w1[name] = per_model(points, len(models), lambda x: wasserstein_1(x, reference.target_samples))
        loss[name] = RepeatedEstimate(torch.stack([laplace.loss(theta) for theta in models]).detach().cpu().numpy())
    return ChoiceResult(choice, posterior.rank, ensembles.v.norm(dim=1).median().item(), ensembles.filtered,
                        loss, memorisation_gap, w1, far_out, ensembles.seconds)


METHODS = ("euclidean", "riemannian")
MEASURES = ("loss", "memorisation_gap", "w1")
"""The per-model values a results file keeps for each method and choice."""


def sweep_results(
    sweep: Sequence[PositivePartChoice],
    sizes: PositivePartSizes,
    references: Mapping[int, SweepReference],
    outcomes: Mapping[tuple[int, PositivePartChoice], ChoiceResult],
) -> dict[str, Any]:
    """The results file of a sweep: the choices, and per dimension (``"1d"``, ``"2d"``) the MAP's and the
    target's scores and, per choice, every model's values (:data:`MEASURES`); ``"p_values"`` holds
    :func:`comparisons` of those values."""
    results: dict[str, Any] = {
        "choices": [{"kind": c.kind, "relative": c.relative, "label": c.label} for c in sweep],
        "models": sizes.models, "base_samples": sizes.base_samples,
    }
    for dim, reference in references.items():
        results[f"{dim}d"] = {
            "map_memorisation": reference.map_memorisation, "map_w1": reference.map_w1,
            "target_w1": reference.target_w1,
            "choices": [{"label": choice.label, "rank": o.rank, "velocity_norm": o.velocity_norm, "filtered": o.filtered,
                         "far_out": o.far_out, "geodesic_seconds": o.seconds,
                         **{field: {name: getattr(o, field)[name].values.tolist() for name in METHODS}
                            for field in MEASURES}}
                        for choice in sweep for o in [outcomes[dim, choice]]],
        }
    results["p_values"] = comparisons(results)
    return results


def dimensions(results: Mapping[str, Any]) -> list[int]:
    """The dimensions a results file of :func:`sweep_results` holds, ascending."""
    return sorted(int(key[:-1]) for key in results if key.endswith("d") and key[:-1].isdigit())


def comparisons(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One-sided Mann-Whitney p-values over the models of a results file of :func:`sweep_results`.

    Per dimension: for every choice, "loss E > R" and "W1 E > R" (the Euclidean models' values are
    stochastically larger than the Riemannian ones'); per method (E, R), between the first choice (the
    strongest: the highest floor) and the last (the weakest: the smallest prior precision), "W1 <m> weakest >
    strongest" and "memorisation <m> strongest > weakest". Each entry is ``{"dim", "test", "choice", "p"}``,
    ``choice`` a label or None for the strongest-weakest comparisons.
    """
    def greater(larger: Sequence[float], smaller: Sequence[float]) -> float:
        return float(stats.mannwhitneyu(np.asarray(larger), np.asarray(smaller), alternative="greater").pvalue)

    found = []
    for dim in dimensions(results):
        per_choice = results[f"{dim}d"]["choices"]
        for o in per_choice:
            for test, field in (("loss E > R", "loss"), ("W1 E > R", "w1")):
                found.append({"dim": dim, "test": test, "choice": o["label"],
                              "p": greater(o[field]["euclidean"], o[field]["riemannian"])})
        strongest, weakest = per_choice[0], per_choice[-1]
        for name in METHODS:
            short = name[0].upper()
            found.append({"dim": dim, "test": f"W1 {short} weakest > strongest", "choice": None,
                          "p": greater(weakest["w1"][name], strongest["w1"][name])})
            found.append({"dim": dim, "test": f"memorisation {short} strongest > weakest", "choice": None,
                          "p": greater(strongest["memorisation_gap"][name], weakest["memorisation_gap"][name])})
    return found
