"""The positive-part choices of chapter 13 against closed forms, and one small sweep step end to end."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from support.core.parameters import functional_forward
from support.evaluation.divergences import wasserstein_1
from support.evaluation.memorisation import memorisation_ratio
from support.experiments.memorising_flow import flow_laplace
from support.experiments.positive_part_sweep import (
    MEMORISATION_THRESHOLD,
    PositivePartChoice,
    choices,
    comparisons,
    dimensions,
    run_choice,
    sweep_reference,
    sweep_results,
)
from support.experiments.toy_1d import fit_memorising_flow_1d
from support.infra.profiles import get_profile
from support.infra.reproducibility import seed_everything
from support.models.flow_matching import generate


def indefinite_spectrum(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Descending eigenpairs of a 6 x 6 symmetric matrix with eigenvalues 10, 1, 0.1, 0.01, -0.5, -2."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    return torch.tensor([10.0, 1.0, 0.1, 0.01, -0.5, -2.0], dtype=torch.float64), q


@pytest.mark.parametrize("relative, kept", [(0.5, 1), (0.05, 2), (0.005, 3), (1e-4, 4)])
def test_a_floor_keeps_the_eigenpairs_above_it_and_nothing_else(relative, kept):
    eigenvalues, q = indefinite_spectrum()
    covariance = PositivePartChoice("floor", relative).laplace(eigenvalues, q).covariance()
    want = (q[:, :kept] / eigenvalues[:kept]) @ q[:, :kept].T  # sum over lambda_i > tau of u_i u_i^T / lambda_i
    assert torch.allclose(covariance, want, atol=1e-12)


@pytest.mark.parametrize("relative", [0.1, 0.001])
def test_a_prior_gives_every_positive_direction_lambda_plus_delta_and_the_rest_the_prior_variance(relative):
    eigenvalues, q = indefinite_spectrum()
    delta = relative * 10.0
    covariance = PositivePartChoice("prior", relative).laplace(eigenvalues, q).covariance()
    precision = torch.where(eigenvalues > 0, eigenvalues + delta, torch.full_like(eigenvalues, delta))
    assert torch.allclose(covariance, (q / precision) @ q.T, atol=1e-10)
    # where H + delta I is positive definite, this is its inverse on the positive directions too
    h = (q * eigenvalues) @ q.T
    positive = q[:, eigenvalues > 0]
    assert torch.allclose(positive.T @ covariance @ positive,
                          positive.T @ torch.linalg.inv(h + delta * torch.eye(6, dtype=h.dtype)) @ positive, atol=1e-10)


def test_choices_are_validated_and_listed_floors_first():
    with pytest.raises(ValueError, match="'floor' or 'prior'"):
        PositivePartChoice("ridge", 1e-3)
    for bad in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="must be positive"):
            PositivePartChoice("floor", bad)
    sizes = get_profile("smoke").positive_part
    listed = choices(sizes)
    assert [c.relative for c in listed] == [*sizes.floors, *sizes.prior_precisions]
    assert [c.kind for c in listed] == ["floor"] * len(sizes.floors) + ["prior"] * len(sizes.prior_precisions)


def test_one_choice_end_to_end_matches_a_direct_computation():
    smoke = get_profile("smoke")
    tiny = replace(smoke, flow_matching=replace(smoke.flow_matching, n_pairs=200, hidden=(8, 8), train_steps=1000),
                   positive_part=replace(smoke.positive_part, models=3, base_samples=40))
    torch.set_default_dtype(tiny.dtype)
    generator = seed_everything(tiny.seed)
    problem = fit_memorising_flow_1d(tiny, generator, progress=False)
    laplace = flow_laplace(problem)
    reference = sweep_reference(problem, tiny.positive_part, 10, generator)
    assert reference.x0.shape == (40, 1) and reference.target_samples.shape == (40, 1)
    state = generator.get_state()
    outcome = run_choice(problem, laplace, PositivePartChoice("floor", 1e-2), reference, tiny, 10, generator)
    assert outcome.filtered == 0 and outcome.rank == int((laplace.eigenvalues > 1e-2 * laplace.eigenvalues[0]).sum())
    # recompute the Euclidean models' statistics from the same velocities, without the sweep's code
    generator.set_state(state)
    v = PositivePartChoice("floor", 1e-2).laplace(laplace.eigenvalues, laplace.eigenvectors).sample(3, generator)
    gaps, distances = [], []
    for theta in laplace.theta_star + v:
        points = generate(functional_forward(problem.model, laplace.layout, theta), reference.x0, method="euler", steps=10)
        gaps.append(memorisation_ratio(points, problem.train_points, MEMORISATION_THRESHOLD).item()
                    - reference.map_memorisation)
        distances.append(wasserstein_1(points, reference.target_samples))
    assert outcome.memorisation_gap["euclidean"].values.tolist() == pytest.approx(gaps, abs=1e-12)
    assert outcome.w1["euclidean"].values.tolist() == pytest.approx(distances, rel=1e-9)
    assert outcome.velocity_norm == pytest.approx(v.norm(dim=1).median().item())
    assert len(outcome.w1["riemannian"].values) == 3 and outcome.far_out == {"euclidean": 0.0, "riemannian": 0.0}
    # the results file keeps every model's values, survives JSON, and its comparisons are recomputed from them
    choice = outcome.choice
    results = json.loads(json.dumps(sweep_results([choice, choice], tiny.positive_part, {1: reference},
                                                  {(1, choice): outcome})))
    assert results["1d"]["choices"][0]["w1"]["euclidean"] == outcome.w1["euclidean"].values.tolist()
    assert results["1d"]["map_w1"] == reference.map_w1 and results["models"] == 3
    assert results["p_values"] == comparisons(results) and dimensions(results) == [1]


def synthetic_results(seed: int = 0) -> dict:
    """A results file of two dimensions and three choices with random per-model values (E shifted above R)."""
    rng = np.random.default_rng(seed)
    labels = ["floor tau = 0.1 lambda_1", "floor tau = 0.001 lambda_1", "prior delta = 0.01 lambda_1"]

    def values(shift: float) -> list[float]:
        return (rng.standard_normal(7) + shift).tolist()

    return {"choices": [{"kind": label.split()[0], "relative": float(label.split()[3]), "label": label}
                        for label in labels],
            **{f"{dim}d": {"choices": [{"label": label, **{field: {"euclidean": values(1.0 + i), "riemannian": values(0.0)}
                                                        for field in ("loss", "memorisation_gap", "w1")}}
                                       for i, label in enumerate(labels)]} for dim in (1, 2)}}


def test_comparisons_are_one_sided_mann_whitney_tests_of_the_stored_per_model_values():
    results = synthetic_results()
    assert dimensions(results) == [1, 2]
    found = comparisons(results)
    # per dimension: two tests per choice, then two per method between the first and the last choice
    assert len(found) == 2 * (2 * 3 + 2 * 2)
    by_key = {(c["dim"], c["test"], c["choice"]): c["p"] for c in found}
    assert len(by_key) == len(found)
    for dim in (1, 2):
        per_choice = results[f"{dim}d"]["choices"]
        for o in per_choice:
            for test, field in (("loss E > R", "loss"), ("W1 E > R", "w1")):
                want = stats.mannwhitneyu(o[field]["euclidean"], o[field]["riemannian"], alternative="greater").pvalue
                assert by_key[dim, test, o["label"]] == pytest.approx(want, rel=1e-12)
        first, last = per_choice[0], per_choice[-1]
        want = stats.mannwhitneyu(last["w1"]["euclidean"], first["w1"]["euclidean"], alternative="greater").pvalue
        assert by_key[dim, "W1 E weakest > strongest", None] == pytest.approx(want, rel=1e-12)
        want = stats.mannwhitneyu(first["memorisation_gap"]["riemannian"], last["memorisation_gap"]["riemannian"],
                                  alternative="greater").pvalue
        assert by_key[dim, "memorisation R strongest > weakest", None] == pytest.approx(want, rel=1e-12)
    # the Euclidean values sit one to three standard deviations above: one-sided, the reverse is not significant
    assert by_key[1, "W1 E > R", "prior delta = 0.01 lambda_1"] < 0.01
    flipped = {"choices": results["choices"], "1d": {"choices": [
        {**o, "w1": {"euclidean": o["w1"]["riemannian"], "riemannian": o["w1"]["euclidean"]}}
        for o in results["1d"]["choices"]]}}
    assert {(c["test"], c["choice"]): c["p"] for c in comparisons(flipped)}["W1 E > R", "prior delta = 0.01 lambda_1"] > 0.99
