"""Exact densities of an ensemble of flows on a box, with the checks that make them trustworthy (Sec. 3.1).

For S models theta_s (S = 1: the MAP) :func:`evaluate_predictive_density` computes, on a box
in 1D or 2D,

* the posterior predictive log-density of eq (22) and the generative uncertainty on a grid,
* the mean predictive log-likelihood of held-out target points,
* two self-checks: the **mass** each model's density puts on the box (adaptive quadrature that
  refines where the error estimate or the model's own samples ask for it,
  :mod:`support.evaluation.quadrature`) against the **share of its generated samples** that land in it (a
  model with a shortfall should report unresolved cells: the quadrature must not fail
  silently), and the total-variation distance
  between a **KDE of generated samples** and the density **convolved with the same kernel**
  (what the KDE estimates without bias),
* the differential entropy -E[log p(x | D)] estimated from generated samples.

Generated samples come from the exact flow (dopri5), like the likelihood (an Euler sampler has a
different density).

The expensive parts, the members' log-densities (in blocks of ``models_per_solve`` models) and one
quadrature per integrated model, are independent pieces of work: ``workers`` forked CPU processes
share them (:func:`support.infra.forked_map.forked_map`, the same numbers for any worker count), and
with ``checkpoint`` every finished piece is saved atomically, so an interrupted evaluation resumes
where it stopped (the samples, a second of dopri5, are always regenerated, so the caller's generator
advances as in an uninterrupted run).

:meth:`DensityEvaluation.summary` is what a results file keeps of an evaluation, and
:func:`masses_match_shares` and :func:`paired_log_density_gap` give the same checks and comparisons on it
as on the evaluation itself, so a chapter checks its claims on a committed paper-profile run with the
code it uses on its own run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..core.parameters import ParameterLayout
from ..infra.forked_map import forked_map
from ..infra.results import atomic_torch_save, load_checkpoint
from ..infra.validation import require_positive_int
from ..models.ensembles import generate_ensemble
from ..models.likelihood import ensemble_log_likelihoods, generative_uncertainty, posterior_predictive_log_density
from .quadrature import adaptive_quadrature, gaussian_smoothing


@dataclass(frozen=True)
class DensityEvaluation:
    """What :func:`evaluate_predictive_density` measured for one method (S models)."""

    grid: torch.Tensor
    """The uniform plotting grid [G, D] on the box (meshgrid order ``xy`` in 2D)."""
    grid_log_density: torch.Tensor
    """log p(x | D) (eq 22) at the grid points [G]."""
    grid_uncertainty: torch.Tensor
    """log p(x | D) - mean_s log p(x | theta_s) at the grid points [G] (zero for one model)."""
    test_log_densities: torch.Tensor
    """log p(x | D) at each held-out point [T] (paired differences between methods give standard errors)."""
    member_masses: torch.Tensor
    """Integral of p(x | theta_s) over the box for the integrated models [S'] (adaptive quadrature)."""
    member_shares: torch.Tensor
    """Share of model s's own samples inside the box [S']: what ``member_masses`` should equal."""
    member_share_standard_errors: torch.Tensor
    """Binomial standard error of each share, sqrt(share (1 - share) / n) over the model's n samples [S']."""
    member_unresolved: torch.Tensor
    """Cells per integrated model that still asked for a split at the finest level [S'] (0: resolved)."""
    member_peak_log_density: torch.Tensor
    """Largest log p(x | theta_s) over model s's own samples in the box [S]: how sharp its peaks are;
    -inf for a model none of whose samples lands in the box (see :attr:`peak_log_densities`)."""
    quadrature_nodes: int
    """Density evaluations all the quadratures used together."""
    total_variation_to_kde: float
    """(1/2) int |KDE of samples - p * kernel| over the grid, for the mixture of the integrated models."""
    kde_noise_floor: float
    """What ``total_variation_to_kde`` is expected to be from sampling noise alone (from two half-sample KDEs)."""
    entropy: float
    """-mean log p(x | D) over generated samples inside the box."""

    @property
    def test_log_likelihood(self) -> float:
        """Mean of log p(x | D) over the held-out points."""
        return self.test_log_densities.mean().item()

    def mass_matches_share(self, tolerance: float = 0.005, standard_errors: float = 4.0) -> torch.Tensor:
        """[S'] whether each model's mass equals its sample share within ``standard_errors`` binomial
        standard errors of the share plus the quadrature ``tolerance`` (the self-check of Sec. 3.1's densities)."""
        return _mass_within_share(self.member_masses, self.member_shares, self.member_share_standard_errors,
                                  tolerance, standard_errors)

    def summary(self) -> dict[str, Any]:
        """What a results file keeps (JSON-safe): the scalars, the integrated models' masses, shares, their
        standard errors and unresolved cells, and every model's peak log-density (None where it has none)."""
        return {"test_log_likelihood": self.test_log_likelihood, "entropy": self.entropy,
                "member_masses": self.member_masses.tolist(), "member_shares": self.member_shares.tolist(),
                "member_share_standard_errors": self.member_share_standard_errors.tolist(),
                "unresolved_cells": self.member_unresolved.tolist(), "peak_log_density": self.peak_log_densities,
                "total_variation_to_kde": self.total_variation_to_kde, "kde_noise_floor": self.kde_noise_floor,
                "quadrature_nodes": self.quadrature_nodes}

    @property
    def peak_log_densities(self) -> list[float | None]:
        """``member_peak_log_density`` as floats, None for a model with no sample in the box (JSON-safe)."""
        return [peak if math.isfinite(peak) else None for peak in self.member_peak_log_density.tolist()]

    @property
    def models_without_samples_in_box(self) -> int:
        """How many of the S models put none of their samples in the box (their peak does not exist)."""
        return int((~torch.isfinite(self.member_peak_log_density)).sum())

    @property
    def mass(self) -> float:
        """Mean mass of the integrated models: p(x | D)'s mass when all are integrated (eq 22 is a mean)."""
        return self.member_masses.mean().item()

    @property
    def share_inside(self) -> float:
        """Share of the integrated models' samples inside the box (estimates the same as ``mass``)."""
        return self.member_shares.mean().item()


def _mass_within_share(masses: torch.Tensor, shares: torch.Tensor, share_standard_errors: torch.Tensor,
                       tolerance: float, standard_errors: float) -> torch.Tensor:
    return (masses - shares).abs() <= tolerance + standard_errors * share_standard_errors


def masses_match_shares(summary: Mapping[str, Any], tolerance: float = 0.005, standard_errors: float = 4.0) -> list[bool]:
    """:meth:`DensityEvaluation.mass_matches_share` on a :meth:`DensityEvaluation.summary` (e.g. read from a
    committed results file): one bool per integrated model."""
    masses, shares, errors = (torch.tensor(summary[key], dtype=torch.float64) for key in (
        "member_masses", "member_shares", "member_share_standard_errors"))
    return _mass_within_share(masses, shares, errors, tolerance, standard_errors).tolist()


def paired_log_density_gap(better: DensityEvaluation, worse: DensityEvaluation) -> tuple[float, float]:
    """Mean and standard error of log p_better(x) - log p_worse(x) over the same held-out points: the paired
    comparison of two predictives' test log-likelihoods."""
    if better.test_log_densities.shape != worse.test_log_densities.shape:
        raise ValueError(f"the two evaluations have different held-out points ({tuple(better.test_log_densities.shape)} "
                         f"and {tuple(worse.test_log_densities.shape)}): a paired gap needs the same ones")
    gap = better.test_log_densities - worse.test_log_densities
    return gap.mean().item(), gap.std().item() / len(gap) ** 0.5


def _fingerprint(tensors: tuple[torch.Tensor, ...], options: tuple) -> str:
    """SHA-256 of the tensors (shapes, dtypes and values) and the options' repr: what a checkpoint is for."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr(options).encode())
    return digest.hexdigest()


def _run_pieces(run, pieces: list[tuple[str, int]], workers: int, checkpoint: str | Path | None, fingerprint: str,
                progress: bool) -> dict[tuple[str, int], Any]:
    """``{piece: run(piece)}``, ``workers`` pieces at a time, resuming from and saving to ``checkpoint``."""
    saved = load_checkpoint(checkpoint, fingerprint, "the models, samples, points and options of this evaluation",
                            required=("done",))
    done = {} if saved is None else {tuple(key): value for key, value in saved["done"]}
    pending = [piece for piece in pieces if piece not in done]
    with tqdm(total=len(pieces), initial=len(pieces) - len(pending), desc="density evaluation", unit="piece",
              disable=not progress) as bar:
        for start in range(0, len(pending), workers):
            wave = pending[start: start + workers]
            done.update(zip(wave, forked_map(run, wave, workers)))
            bar.update(len(wave))
            if checkpoint is not None:
                atomic_torch_save({"fingerprint": fingerprint, "done": [(list(key), value) for key, value in done.items()]},
                                  Path(checkpoint))
    return done


def evaluate_predictive_density(
    model: nn.Module,
    layout: ParameterLayout,
    thetas: torch.Tensor,
    half_width: float,
    points_per_axis: int,
    test_points: torch.Tensor,
    samples_per_model: int,
    bandwidth: float,
    generator: torch.Generator,
    max_levels: int = 8,
    tolerance: float = 1e-5,
    integrated_models: int | None = None,
    models_per_solve: int = 16,
    workers: int = 1,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    **likelihood_options,
) -> DensityEvaluation:
    """Densities and checks of the ensemble ``thetas`` [S, K] on the box [-half_width, half_width]^D.

    D is the dimension of ``test_points`` [N, D] (1 or 2). The plotting grid has
    ``points_per_axis`` points per axis and is also the quadrature's initial lattice;
    ``samples_per_model`` samples are generated by every model; ``bandwidth`` is the KDE kernel
    width (at least the grid spacing); ``max_levels`` and ``tolerance`` go to
    :func:`support.evaluation.quadrature.adaptive_quadrature` (run once per model, refined where that
    model needs it) and ``likelihood_options`` to :func:`support.models.likelihood.flow_log_likelihood`.
    Normalisation is a property of every single theta (Sec. 3.1), so the mass and KDE checks may
    be restricted to the first ``integrated_models`` models (default: all) where quadrature is
    expensive; the density, uncertainty, test likelihood and entropy always use all S.

    ``models_per_solve`` models share one vmapped reverse solve of all points; ``workers`` forked CPU
    processes share those solves and the quadratures (1: none; the results do not depend on it);
    ``checkpoint`` is a file where every finished solve and quadrature is saved, and from which a
    run with the same inputs resumes (a file written for other inputs is ignored with a warning and
    overwritten); ``progress`` shows a bar over them.
    """
    if thetas.ndim != 2 or thetas.shape[0] < 1:
        raise ValueError(f"thetas must have shape [S, K] with S >= 1, got {tuple(thetas.shape)}")
    if test_points.ndim != 2 or test_points.shape[1] not in (1, 2):
        raise ValueError(f"test points must have shape [N, 1] or [N, 2], got {tuple(test_points.shape)}")
    count = len(thetas) if integrated_models is None else integrated_models
    if not 1 <= count <= len(thetas):
        raise ValueError(f"integrated_models must lie in [1, {len(thetas)}], got {integrated_models}")
    require_positive_int("models_per_solve", models_per_solve)
    require_positive_int("workers", workers)
    d, dtype = test_points.shape[1], test_points.dtype
    axis = torch.linspace(-half_width, half_width, points_per_axis, dtype=dtype)
    if not bandwidth >= (axis[1] - axis[0]) * (1 - 1e-9):
        raise ValueError(f"bandwidth {bandwidth} is below the grid spacing {axis[1] - axis[0]:.3g}")
    grid = torch.stack(torch.meshgrid(*[axis] * d, indexing="xy"), dim=-1).reshape(-1, d)
    x0 = torch.randn(samples_per_model, d, generator=generator, dtype=dtype)
    samples = generate_ensemble(model, layout, thetas, x0, method="dopri5", rtol=1e-6, atol=1e-8)  # [S, n, D]
    inside = (samples.abs() <= half_width).all(dim=-1)  # [S, n]
    samples_in = samples[inside]

    points = torch.cat([grid, samples_in, test_points])
    blocks = thetas.split(models_per_solve)

    def run(piece: tuple[str, int]) -> Any:
        kind, index = piece
        if kind == "members":  # log p(x | theta_s) at every point for one block of models [m, P]
            return ensemble_log_likelihoods(model, layout, blocks[index], points, models_per_solve, **likelihood_options)
        theta = thetas[index]
        member = lambda x: ensemble_log_likelihoods(model, layout, theta[None], x, **likelihood_options)[0]
        quadrature = adaptive_quadrature(member, half_width, points_per_axis - 1, samples[index], max_levels, tolerance)
        return {"mass": quadrature.integral, "unresolved": quadrature.unresolved_cells, "nodes": len(quadrature.nodes),
                # this model's share of the mixture of the integrated models, convolved with the kernel, on the grid
                "smoothed": gaussian_smoothing(grid, quadrature.nodes, quadrature.weights * quadrature.log_density.exp(),
                                               bandwidth) / count}

    pieces = [("members", b) for b in range(len(blocks))] + [("quadrature", s) for s in range(count)]
    options = (repr(model), half_width, points_per_axis, bandwidth, max_levels, tolerance, count, models_per_solve,
               sorted(likelihood_options.items()))
    done = _run_pieces(run, pieces, workers, checkpoint, _fingerprint((thetas, samples, points), options), progress)
    members = torch.cat([done["members", b] for b in range(len(blocks))])  # [S, P]
    log_density = posterior_predictive_log_density(members)
    grid_log_density, sample_log_density, test_log_density = log_density.split([len(grid), len(samples_in),
                                                                                len(test_points)])
    own = members[:, len(grid): len(grid) + len(samples_in)]  # every model at every sample in the box
    owner = torch.arange(len(thetas))[:, None].expand_as(inside)[inside]
    peaks = torch.stack([own[s, owner == s].max() if bool((owner == s).any()) else own.new_tensor(float("-inf"))
                         for s in range(len(thetas))])

    quadratures = [done["quadrature", s] for s in range(count)]
    masses = [q["mass"] for q in quadratures]
    unresolved = [q["unresolved"] for q in quadratures]
    nodes = sum(q["nodes"] for q in quadratures)
    smoothed_flow = torch.zeros(len(grid), dtype=dtype)
    for q in quadratures:
        smoothed_flow += q["smoothed"]
    # the KDE of those models' samples in the box, each with mass 1 / (all their samples), estimates p * kernel
    # on the box. It is the mean of the KDEs of two independent halves of the samples, and half the distance
    # between those is the KDE's own sampling noise (each half's error has twice the variance of the full
    # KDE's, their difference four times).
    checked = samples[:count][inside[:count]]
    halves = [gaussian_smoothing(grid, half, torch.full((len(half),), 2 / inside[:count].numel(), dtype=dtype),
                                 bandwidth) for half in (checked[0::2], checked[1::2])]
    kde = (halves[0] + halves[1]) / 2

    def half_l1(values: torch.Tensor) -> float:
        values = values.abs().reshape([points_per_axis] * d)
        for _ in range(d):
            values = torch.trapezoid(values, axis, dim=-1)
        return 0.5 * values.item()

    shares = inside[:count].to(dtype).mean(dim=1)
    return DensityEvaluation(
        grid=grid,
        grid_log_density=grid_log_density,
        grid_uncertainty=generative_uncertainty(members[:, : len(grid)]),
        test_log_densities=test_log_density,
        member_masses=torch.tensor(masses, dtype=dtype),
        member_shares=shares,
        member_share_standard_errors=(shares * (1 - shares) / inside.shape[1]).sqrt(),
        member_unresolved=torch.tensor(unresolved),
        member_peak_log_density=peaks,
        quadrature_nodes=nodes,
        total_variation_to_kde=half_l1(kde - smoothed_flow),
        kde_noise_floor=0.5 * half_l1(halves[0] - halves[1]),
        entropy=-sample_log_density.mean().item(),
    )
