"""KL / W1 estimators of the 1D experiment against closed forms."""

import math

import numpy as np
import pytest
from scipy import stats
import torch

from support.data.toy_data import IsotropicGMM
from support.evaluation.divergences import (
    MAX_LOO_POINTS,
    PooledWasserstein1D,
    kde,
    kl_target_to_kde,
    loo_bandwidth,
    repeated_kl,
    wasserstein_1,
    wasserstein_1d,
)

torch.set_default_dtype(torch.float64)


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * x[:, 0] ** 2 - 0.5 * math.log(2 * math.pi)


def test_kl_matches_the_gaussian_closed_form_for_a_fixed_bandwidth():
    # KDE of N(mu, 1) samples with bandwidth h is ~ N(mu, 1 + h^2): KL(N(0,1) || N(mu, s^2)) in closed form.
    generator = torch.Generator().manual_seed(0)
    mu, h = 0.7, 0.3
    samples = mu + torch.randn(20_000, generator=generator)
    estimate = kl_target_to_kde(standard_normal_log_prob, samples, torch.linspace(-8, 8, 3201), bandwidth=h)
    m, s2 = samples.mean().item(), samples.var().item() + h**2  # moments of the KDE itself
    exact = 0.5 * math.log(s2) + (1 + m**2) / (2 * s2) - 0.5
    assert estimate == pytest.approx(exact, abs=3e-3)


def test_loo_bandwidth_is_near_the_normal_reference_rule_and_shrinks_for_near_copies():
    generator = torch.Generator().manual_seed(1)
    samples = torch.randn(500, generator=generator)
    silverman = 1.06 * 500 ** (-1 / 5)
    assert 0.5 * silverman < loo_bandwidth(samples) < 2 * silverman
    copies = torch.tensor([-1.5, 1.5]).repeat(50) + 1e-3 * torch.randn(100, generator=generator)
    assert loo_bandwidth(copies) < 0.01  # memorised samples get a bandwidth at their own scale
    assert kde(copies, "scott").factor * copies.std().item() > 0.5  # Scott's rule does not


def test_repeated_kl_orders_memorisation_and_reports_standard_errors():
    generator = torch.Generator().manual_seed(2)
    target = IsotropicGMM(torch.tensor([[-1.5], [1.5]]), torch.tensor([0.1, 0.1]))
    grid = torch.linspace(-6, 6, 1201)
    good = repeated_kl(target.log_prob, target.sample(2000, generator), grid, 20, 100, generator)
    memorised = torch.tensor([[-1.5], [1.5]]).repeat(1000, 1) + 1e-3 * torch.randn(2000, 1, generator=generator)
    bad = repeated_kl(target.log_prob, memorised, grid, 20, 100, generator)
    assert len(good.values) == 20 and good.standard_error > 0
    assert bad.mean > 10 * good.mean
    with pytest.raises(ValueError, match="subset"):
        repeated_kl(target.log_prob, memorised[:50], grid, 2, 100, generator)


def test_wasserstein_of_a_shift_is_the_shift_and_bad_input_is_rejected():
    x = torch.randn(300, generator=torch.Generator().manual_seed(3))
    assert wasserstein_1d(x + 0.25, x) == pytest.approx(0.25, abs=1e-12)
    with pytest.raises(ValueError, match="non-finite"):
        wasserstein_1d(torch.tensor([0.0, float("nan")]), x)
    with pytest.raises(ValueError, match="1-D"):
        wasserstein_1d(torch.zeros(3, 2), x)
    with pytest.raises(ValueError, match="at most"):
        loo_bandwidth(np.zeros(MAX_LOO_POINTS + 1))


def test_wasserstein_1_of_a_translation_is_its_length_in_any_dimension():
    # W1(mu, mu + a) = ||a||: the shift coupling attains the 1-Lipschitz lower bound |E<a/|a|, Y - X>|.
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(400, 2, generator=generator)
    shift = torch.tensor([0.3, -0.4])
    assert wasserstein_1(x, x + shift) == pytest.approx(0.5, abs=1e-12)
    assert wasserstein_1(x, x) == pytest.approx(0.0, abs=1e-12)


def test_wasserstein_1_agrees_with_scipy_in_1d_for_unequal_sizes():
    generator = torch.Generator().manual_seed(4)
    a, b = torch.randn(300, 1, generator=generator), 1.3 * torch.randn(170, 1, generator=generator) + 0.2
    assert wasserstein_1(a, b) == pytest.approx(wasserstein_1d(a, b), rel=1e-9)


def test_wasserstein_1_rejects_bad_input():
    with pytest.raises(ValueError, match="non-finite"):
        wasserstein_1(torch.tensor([[0.0, float("inf")]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="dimensions differ"):
        wasserstein_1(torch.zeros(3, 2), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="shape"):
        wasserstein_1(torch.zeros(3), torch.zeros(3, 1))


def test_fixed_bandwidth_kde_equals_scipy_and_handles_identical_samples():
    """#21: identical samples (a fully memorising model) crashed with scipy's LinAlgError even with an explicit h."""
    generator = torch.Generator().manual_seed(5)
    samples = torch.randn(300, generator=generator)
    x = np.linspace(-4, 4, 81)
    ours = kde(samples, 0.3).logpdf(x)
    scipy_kde = stats.gaussian_kde(samples.numpy(), bw_method=0.3 / samples.numpy().std(ddof=1))
    assert np.allclose(ours, scipy_kde.logpdf(x), atol=1e-10)
    target = IsotropicGMM(torch.tensor([[-1.5], [1.5]]), torch.tensor([0.1, 0.1]))
    grid = torch.linspace(-6, 6, 2401)
    copies = torch.full((100,), 1.5)
    kl = kl_target_to_kde(target.log_prob, copies, grid, bandwidth=0.2)
    p = target.log_prob(grid[:, None]).exp().numpy()
    expected = np.trapezoid(p * (np.log(p) - stats.norm.logpdf(grid.numpy(), 1.5, 0.2)), grid.numpy())
    assert kl == pytest.approx(expected, rel=1e-9)
    assert np.isfinite(kl_target_to_kde(target.log_prob, copies, grid))  # leave-one-out picks the smallest h
    with pytest.raises(ValueError, match="Scott's rule.*spread"):
        kde(copies, "scott")


def test_kl_grids_and_subsets_that_would_give_wrong_numbers_are_refused():
    """#21: a descending grid flipped the sign, a grid missing mass went unnoticed, subset=-5 used 45 of 50."""
    generator = torch.Generator().manual_seed(6)
    target = IsotropicGMM(torch.tensor([[-1.5], [1.5]]), torch.tensor([0.1, 0.1]))
    samples = target.sample(200, generator)
    with pytest.raises(ValueError, match="strictly increasing"):
        kl_target_to_kde(target.log_prob, samples, torch.linspace(6, -6, 1201))
    with pytest.raises(ValueError, match="holds 0.5"):
        kl_target_to_kde(target.log_prob, samples, torch.linspace(0, 6, 1201))
    with pytest.raises(ValueError, match="non-finite"):
        kl_target_to_kde(target.log_prob, samples, torch.tensor([-6.0, float("nan"), 6.0]))
    with pytest.raises(ValueError, match="subset must be a positive integer"):
        repeated_kl(target.log_prob, samples, torch.linspace(-6, 6, 1201), 5, -5, generator)
    for bad in (float("nan"), -1.0, 0.0, "silverman"):
        with pytest.raises(ValueError, match="bandwidth must be 'loo', 'scott' or a finite positive number"):
            kde(samples, bad)


def test_pooled_wasserstein_equals_scipy_on_the_resampled_pool() -> None:
    """Oracle: scipy's W1 of the models drawn (with repeats), their far points left out, against the reference."""
    generator = torch.Generator().manual_seed(3)
    blocks = torch.randn(7, 40, generator=generator, dtype=torch.float64) * torch.linspace(0.5, 3, 7)[:, None]
    blocks[2, :5] = 1e4  # points the keep mask leaves out
    blocks[4] = blocks[4].round()  # ties inside a model
    reference = torch.randn(300, generator=generator, dtype=torch.float64)
    keep = blocks.abs() < 1e3
    pooled = PooledWasserstein1D(blocks, reference, keep)
    for _ in range(5):
        chosen = torch.randint(7, (7,), generator=generator)
        resampled = blocks[chosen].reshape(-1)
        expected = wasserstein_1d(resampled[resampled.abs() < 1e3], reference)
        assert pooled(torch.bincount(chosen, minlength=7)) == pytest.approx(expected, rel=1e-12)
    assert pooled(torch.ones(7)) == pytest.approx(wasserstein_1d(blocks[keep], reference), rel=1e-12)


def test_pooled_wasserstein_rejects_bad_input() -> None:
    blocks, reference = torch.zeros(3, 4), torch.randn(10)
    with pytest.raises(ValueError, match=r"shape \[S, N\]"):
        PooledWasserstein1D(torch.zeros(12), reference)
    with pytest.raises(ValueError, match="non-finite"):
        PooledWasserstein1D(torch.tensor([[0.0, float("nan")]]), reference)
    with pytest.raises(ValueError, match="boolean mask"):
        PooledWasserstein1D(blocks, reference, torch.ones(3, 5, dtype=torch.bool))
    pooled = PooledWasserstein1D(blocks, reference, torch.tensor([[True] * 4, [False] * 4, [True] * 4]))
    for bad in (torch.ones(2), torch.tensor([1.0, -1.0, 1.0]), torch.tensor([1.0, float("nan"), 1.0])):
        with pytest.raises(ValueError, match="finite non-negative"):
            pooled(bad)
    with pytest.raises(ValueError, match="keep no point"):
        pooled(torch.tensor([0.0, 3.0, 0.0]))


@pytest.mark.parametrize("elements_per_pass", [1, 10_000, 2_000_000])
def test_loo_bandwidth_maximises_the_leave_one_out_likelihood_however_it_is_batched(monkeypatch, elements_per_pass):
    """Oracle: the leave-one-out log-likelihood summed point by point with scipy's normal density."""
    import support.evaluation.divergences as divergences

    monkeypatch.setattr(divergences, "LOO_ELEMENTS_PER_PASS", elements_per_pass)
    x = np.random.default_rng(4).normal(size=30) * np.array([0.3, 2.0] * 15)
    candidates = np.geomspace(0.05, 2.0, 17)

    def loo(h: float) -> float:
        return sum(np.log(np.mean(np.delete(stats.norm.pdf(x[i], x, h), i))) for i in range(len(x)))

    assert loo_bandwidth(x, candidates) == candidates[int(np.argmax([loo(h) for h in candidates]))]
