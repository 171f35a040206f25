"""evaluate_predictive_density (Sec. 3.1, eq 22) on flows whose densities are known in closed form."""

import json
import math

import pytest
import torch

from support.core.parameters import flatten, select_parameters
from support.evaluation.density_evaluation import (
    evaluate_predictive_density,
    masses_match_shares,
    paired_log_density_gap,
)
from support.evaluation.quadrature import gaussian_smoothing
from support.models.flow_matching import VelocityMLP

torch.set_default_dtype(torch.float64)


def shift_flows(dim: int, shifts: torch.Tensor) -> tuple[VelocityMLP, object, torch.Tensor]:
    """Velocity MLPs with every weight zero and output bias b_s: u = b_s, so p(x | theta_s) = N(b_s, I)."""
    model = VelocityMLP(dim, (4,))
    layout = select_parameters(model)
    for parameter in model.parameters():
        parameter.data.zero_()
    thetas = []
    for b in shifts:
        model.net[-1].bias.data.copy_(b)
        thetas.append(flatten(model, layout))
    return model, layout, torch.stack(thetas)


def box_mass(mean: torch.Tensor, half_width: float) -> torch.Tensor:
    normal = torch.distributions.Normal(0.0, 1.0)
    return (normal.cdf(half_width - mean) - normal.cdf(-half_width - mean)).prod(dim=-1)


@pytest.mark.parametrize("dim", [1, 2])
def test_a_mixture_of_shifted_gaussians_is_recovered(dim):
    shifts = torch.tensor([[1.5, -0.5], [-1.0, 0.5]])[:, :dim]
    model, layout, thetas = shift_flows(dim, shifts)
    generator = torch.Generator().manual_seed(0)
    test = torch.randn(200, dim, generator=generator)
    half_width, bandwidth = 3.0, 0.3
    result = evaluate_predictive_density(model, layout, thetas, half_width, 25, test, 3000, bandwidth, generator,
                                         max_levels=4, tolerance=1e-6, method="rk4", steps=10)

    assert torch.allclose(result.member_masses, box_mass(shifts, half_width), atol=2e-4)
    assert torch.allclose(result.member_shares, box_mass(shifts, half_width), atol=4 / math.sqrt(3000))
    # the shares' binomial standard errors (3000 samples per model), and the mass-vs-share self-check
    expected_se = (result.member_shares * (1 - result.member_shares) / 3000).sqrt()
    assert torch.allclose(result.member_share_standard_errors, expected_se)
    assert bool(result.mass_matches_share().all())
    assert not bool(result.mass_matches_share(tolerance=0.0, standard_errors=0.0).all())  # the share is noisy
    components = torch.distributions.MultivariateNormal(shifts, torch.eye(dim))
    exact = lambda x: torch.logsumexp(components.log_prob(x[:, None]), dim=1) - math.log(2)
    assert result.test_log_likelihood == pytest.approx(exact(test).mean().item(), abs=1e-8)
    assert torch.allclose(result.grid_log_density, exact(result.grid), atol=1e-8)
    assert bool((result.grid_uncertainty >= 0).all())
    # the mixture's peaks sit on the samples, at most (2 pi)^(-D/2)
    assert bool((result.member_peak_log_density <= -dim / 2 * math.log(2 * math.pi) + 1e-8).all())

    # the KDE check: against the closed-form convolution of the box-truncated N(b_s, I) with N(0, h^2 I),
    # per axis N(x; b, 1 + h^2) [Phi((W - m) / s) - Phi((-W - m) / s)], m = (x + b h^2) / (1 + h^2),
    # s^2 = h^2 / (1 + h^2), the KDE shows the same distance
    def truncated_convolution(x: torch.Tensor) -> torch.Tensor:
        h2, normal = bandwidth**2, torch.distributions.Normal(0.0, 1.0)
        m, s = (x[:, None] + shifts * h2) / (1 + h2), math.sqrt(h2 / (1 + h2))
        axes = (torch.distributions.Normal(shifts, math.sqrt(1 + h2)).log_prob(x[:, None]).exp()
                * (normal.cdf((half_width - m) / s) - normal.cdf((-half_width - m) / s)))
        return axes.prod(dim=-1).mean(dim=1)

    generator = torch.Generator().manual_seed(0)
    torch.randn(200, dim, generator=generator)
    samples = (torch.randn(3000, dim, generator=generator) + shifts[:, None]).reshape(-1, dim)
    inside = samples[(samples.abs() <= half_width).all(dim=1)]
    kde = gaussian_smoothing(result.grid, inside, torch.full((len(inside),), 1 / 6000), bandwidth)
    gap = (kde - truncated_convolution(result.grid)).abs()
    axis = torch.linspace(-half_width, half_width, 25)
    gap = gap.reshape([25] * dim)
    for _ in range(dim):
        gap = torch.trapezoid(gap, axis, dim=-1)
    assert result.total_variation_to_kde == pytest.approx(0.5 * gap.item(), abs=5e-4)
    assert result.total_variation_to_kde < 0.05
    assert result.total_variation_to_kde < 2 * result.kde_noise_floor


def test_only_the_requested_models_are_integrated_and_bad_input_is_refused():
    model, layout, thetas = shift_flows(1, torch.tensor([[0.5], [-0.5], [0.0]]))
    generator = torch.Generator().manual_seed(1)
    test = torch.randn(10, 1, generator=generator)
    result = evaluate_predictive_density(model, layout, thetas, 4.0, 41, test, 500, 0.2, generator, max_levels=3,
                                         integrated_models=1, method="rk4", steps=10)
    assert result.member_masses.shape == (1,) and result.member_shares.shape == (1,)
    assert result.grid_uncertainty.shape == (41,)
    with pytest.raises(ValueError, match="bandwidth"):
        evaluate_predictive_density(model, layout, thetas, 4.0, 41, test, 500, 0.1, generator)
    with pytest.raises(ValueError, match="integrated_models"):
        evaluate_predictive_density(model, layout, thetas, 4.0, 41, test, 500, 0.2, generator, integrated_models=4)
    with pytest.raises(ValueError, match="test points"):
        evaluate_predictive_density(model, layout, thetas, 4.0, 41, test[:, 0], 500, 0.2, generator)
    with pytest.raises(ValueError, match="thetas"):
        evaluate_predictive_density(model, layout, thetas[0], 4.0, 41, test, 500, 0.2, generator)


def test_a_model_with_no_sample_in_the_box_has_no_peak_and_is_stored_as_none():
    # N(20, 1) puts no sample in [-3, 3] (mass 1e-70): its peak does not exist, the other model's does
    model, layout, thetas = shift_flows(1, torch.tensor([[0.0], [20.0]]))
    generator = torch.Generator().manual_seed(2)
    test = torch.randn(10, 1, generator=generator)
    result = evaluate_predictive_density(model, layout, thetas, 3.0, 25, test, 300, 0.3, generator, max_levels=3,
                                         method="rk4", steps=10)
    assert result.models_without_samples_in_box == 1
    assert result.member_peak_log_density[1] == float("-inf") and result.member_shares[1] == 0
    peaks = result.peak_log_densities
    assert peaks[1] is None and math.isfinite(peaks[0])
    assert peaks[0] <= -0.5 * math.log(2 * math.pi) + 1e-8
    assert result.member_masses[1] == pytest.approx(0.0, abs=1e-12)


def test_the_summary_gives_the_same_checks_and_the_paired_gap_is_a_paired_mean():
    shifts = torch.tensor([[0.3], [-0.4]])
    model, layout, thetas = shift_flows(1, shifts)
    generator = torch.Generator().manual_seed(3)
    test = torch.randn(300, 1, generator=generator)
    one = evaluate_predictive_density(model, layout, thetas, 4.0, 41, test, 400, 0.2, generator, max_levels=3,
                                      method="rk4", steps=10)
    map_like = evaluate_predictive_density(model, layout, thetas[:1], 4.0, 41, test, 400, 0.2, generator,
                                           max_levels=3, method="rk4", steps=10)
    summary = json.loads(json.dumps(one.summary()))  # what a results file gives back
    assert summary["test_log_likelihood"] == one.test_log_likelihood
    assert summary["member_share_standard_errors"] == one.member_share_standard_errors.tolist()
    for tolerance, errors in ((0.005, 4.0), (0.0, 0.0), (1e-4, 1.0)):
        assert masses_match_shares(summary, tolerance, errors) == one.mass_matches_share(tolerance, errors).tolist()
    # the paired gap against an independent computation: the exact log-densities of the two mixtures
    normal = torch.distributions.Normal(shifts[:, 0], 1.0)
    mixture = torch.logsumexp(normal.log_prob(test), dim=1) - math.log(2)
    single = normal.log_prob(test)[:, 0]
    mean, se = paired_log_density_gap(one, map_like)
    assert mean == pytest.approx((mixture - single).mean().item(), abs=1e-8)
    assert se == pytest.approx((mixture - single).std().item() / math.sqrt(300), rel=1e-6)
    shorter = evaluate_predictive_density(model, layout, thetas[:1], 4.0, 41, test[:10], 400, 0.2, generator,
                                          max_levels=3, method="rk4", steps=10)
    with pytest.raises(ValueError, match="same ones"):
        paired_log_density_gap(one, shorter)


def _fields(result) -> dict:
    """Every number an evaluation reports (tensors and scalars), for exact comparisons."""
    return {name: getattr(result, name) for name in (
        "grid_log_density", "grid_uncertainty", "test_log_densities", "member_masses", "member_shares",
        "member_unresolved", "member_peak_log_density", "quadrature_nodes", "total_variation_to_kde",
        "kde_noise_floor", "entropy")}


def _assert_identical(one, other) -> None:
    for name, value in _fields(one).items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, getattr(other, name)), name
        else:
            assert value == getattr(other, name), name


def test_an_interrupted_evaluation_resumes_to_the_same_numbers_for_any_worker_count(tmp_path, monkeypatch):
    import support.evaluation.density_evaluation as density_evaluation

    model, layout, thetas = shift_flows(2, torch.tensor([[1.0, -0.5], [-1.0, 0.5], [0.2, 0.2]]))
    thetas = thetas + 0.3 * torch.randn(thetas.shape, generator=torch.Generator().manual_seed(5))  # non-trivial fields
    test = torch.randn(50, 2, generator=torch.Generator().manual_seed(6))

    def evaluate(generator: torch.Generator, **options):
        return evaluate_predictive_density(model, layout, thetas, 3.0, 9, test, 150, 0.75, generator, max_levels=3,
                                           tolerance=1e-4, models_per_solve=2, method="rk4", steps=6, **options)

    uninterrupted_generator = torch.Generator().manual_seed(7)
    uninterrupted = evaluate(uninterrupted_generator)
    assert uninterrupted.quadrature_nodes > 3 * 17**2  # the quadratures refined beyond their initial lattices

    # interrupt the run in its second quadrature: the two blocks of member solves and the first quadrature are saved
    real_quadrature, calls = density_evaluation.adaptive_quadrature, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_quadrature(*args, **kwargs)

    checkpoint = tmp_path / "evaluation.pt"
    monkeypatch.setattr(density_evaluation, "adaptive_quadrature", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(torch.Generator().manual_seed(7), checkpoint=checkpoint)
    assert checkpoint.exists()

    # the resumed run does only the two quadratures left, no member solve, and gives the same numbers
    member_solves = []
    real_members = density_evaluation.ensemble_log_likelihoods
    monkeypatch.setattr(density_evaluation, "adaptive_quadrature", real_quadrature)
    monkeypatch.setattr(density_evaluation, "ensemble_log_likelihoods",
                        lambda model, layout, block, x, *args, **kwargs: (member_solves.append(len(block)),
                                                                          real_members(model, layout, block, x, *args,
                                                                                       **kwargs))[1])
    calls.clear()
    monkeypatch.setattr(density_evaluation, "adaptive_quadrature",
                        lambda *args, **kwargs: (calls.append(1), real_quadrature(*args, **kwargs))[1])
    resumed_generator = torch.Generator().manual_seed(7)
    resumed = evaluate(resumed_generator, checkpoint=checkpoint)
    assert len(calls) == 2
    assert all(size == 1 for size in member_solves)  # only the quadratures' single-model solves, no block of 2
    _assert_identical(resumed, uninterrupted)
    assert torch.equal(resumed_generator.get_state(), uninterrupted_generator.get_state())
    monkeypatch.undo()

    # a complete checkpoint answers without computing; two forked workers give the same numbers from scratch
    _assert_identical(evaluate(torch.Generator().manual_seed(7), checkpoint=checkpoint), uninterrupted)
    _assert_identical(evaluate(torch.Generator().manual_seed(7), workers=2), uninterrupted)

    # a checkpoint written for other inputs (another seed, so other samples) is ignored with a warning and replaced
    with pytest.warns(UserWarning, match="another run"):
        other = evaluate(torch.Generator().manual_seed(8), checkpoint=checkpoint)
    _assert_identical(other, evaluate(torch.Generator().manual_seed(8)))
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        evaluate(torch.Generator().manual_seed(7), workers=0)
    with pytest.raises(ValueError, match="models_per_solve must be a positive integer"):
        evaluate_predictive_density(model, layout, thetas, 3.0, 9, test, 150, 0.75, torch.Generator().manual_seed(7),
                                    models_per_solve=0)
