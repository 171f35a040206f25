"""The shared experiment pipeline: reproducible from the seed, and built the way chapters 8 and 9 describe."""

from dataclasses import replace

import pytest
import torch

from support.core.parameters import functional_forward
from support.data.toy_data import gmm_2d
from support.experiments.experiment_ensembles import (
    draw_experiment_2d,
    experiment_1d_samples,
    fit_to_target_1d,
    full_covariance_ensembles_2d,
    posterior_ensembles_1d,
)
from support.experiments.memorising_flow import flow_laplace
from support.experiments.toy_1d import fit_memorising_flow_1d
from support.experiments.toy_2d import fit_memorising_flow_2d
from support.infra.profiles import get_profile
from support.infra.reproducibility import seed_everything
from support.models.flow_matching import generate


@pytest.fixture(scope="module")
def tiny():
    """The smoke profile with networks, training and ensembles small enough for a unit test."""
    smoke = get_profile("smoke")
    return replace(
        smoke,
        flow_matching=replace(smoke.flow_matching, n_pairs=200, hidden=(8, 8), train_steps=1000),
        experiment_1d=replace(smoke.experiment_1d, posterior_samples=3, base_samples=40, kl_repetitions=3, kl_subset=20),
        experiment_2d=replace(smoke.experiment_2d, n_pairs=200, hidden=(8, 8), train_steps=1000, points=30,
                              full_models=3, etas_full=(0.3, 1.0), euler_steps=10),
    )


def run_1d(profile):
    torch.set_default_dtype(profile.dtype)
    generator = seed_everything(profile.seed)
    problem = fit_memorising_flow_1d(profile, generator, progress=False)
    laplace = flow_laplace(problem)
    ensembles = posterior_ensembles_1d(laplace, profile, generator)
    x0, samples = experiment_1d_samples(problem, laplace.layout, ensembles, profile.experiment_1d, 20, generator)
    reference = problem.target.sample(500, generator)
    fit = fit_to_target_1d(samples, problem.target, reference, profile.experiment_1d, generator)
    return problem, laplace, ensembles, x0, samples, fit


def test_the_1d_pipeline_is_reproducible_and_shaped_as_eq_35_36(tiny):
    problem, laplace, ensembles, x0, samples, fit = run_1d(tiny)
    again = run_1d(tiny)
    sizes = tiny.experiment_1d
    s, n = sizes.posterior_samples, sizes.base_samples
    assert torch.equal(ensembles.euclidean, laplace.theta_star + ensembles.v)
    assert ensembles.filtered == 0 and ensembles.riemannian.shape == (s, laplace.layout.dim)
    assert list(samples) == ["target", "map", "euclidean", "riemannian"]
    assert samples["map"].shape == (n, 1) and samples["euclidean"].shape == (s * n, 1) and samples["target"].shape == (s * n, 1)
    # rows n*j .. n*(j+1) - 1 are model j moving the shared base points x0
    model_1 = functional_forward(problem.model, laplace.layout, ensembles.riemannian[1])
    assert torch.allclose(samples["riemannian"][n : 2 * n], generate(model_1, x0, method="euler", steps=20), atol=1e-12)
    for tensor, repeated in [(ensembles.v, again[2].v), (ensembles.riemannian, again[2].riemannian), (x0, again[3])]:
        assert torch.equal(tensor, repeated)
    for name in samples:
        assert torch.equal(samples[name], again[4][name])
        first, second = fit[name], again[5][name]
        assert (first.kl_loo.values == second.kl_loo.values).all() and (first.kl_scott.values == second.kl_scott.values).all()
        assert first.w1 == second.w1 and first.kl_loo.mean > 0


def test_draw_experiment_2d_keeps_the_chapter_order(tiny):
    sizes = tiny.experiment_2d
    target = gmm_2d(tiny.dtype)
    draws = draw_experiment_2d(sizes, target, torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    expected = [torch.randn(sizes.points, 2, generator=generator), target.sample(sizes.points, generator),
                target.sample(sizes.points, generator), torch.randn(sizes.points, 2, generator=generator),
                torch.randn(sizes.points, generator=generator)]
    for drawn, want in zip([draws.x0, draws.target_samples, draws.second_target_samples, draws.figure_base, draws.z], expected):
        assert torch.equal(drawn, want)


def test_full_covariance_models_move_their_own_blocks_of_base_points(tiny):
    torch.set_default_dtype(tiny.dtype)
    sizes = tiny.experiment_2d
    generator = seed_everything(tiny.seed)
    problem = fit_memorising_flow_2d(tiny, generator, progress=False)
    laplace = flow_laplace(problem)
    x0 = torch.randn(sizes.points, 2, generator=generator)
    full = full_covariance_ensembles_2d(problem, laplace, x0, tiny, generator)
    block = sizes.points // sizes.full_models
    assert full.ensembles.filtered == 0
    for k, eta in enumerate(sizes.etas_full, start=1):
        assert torch.allclose(full.thetas["euclidean", eta], laplace.theta_star + eta * full.ensembles.v)
        assert torch.equal(full.thetas["riemannian", eta], full.ensembles.geodesics.position[k])
        for name in ("euclidean", "riemannian"):
            points = full.samples[name, eta]
            assert points.shape == (block * sizes.full_models, 2)
            for s in range(sizes.full_models):  # one model at a time, the oracle for the vmapped solve
                model = functional_forward(problem.model, laplace.layout, full.thetas[name, eta][s])
                alone = generate(model, x0[s * block : (s + 1) * block], method="euler", steps=sizes.euler_steps)
                assert torch.allclose(points[s * block : (s + 1) * block], alone, atol=1e-10)
