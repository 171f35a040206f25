"""The Gaussian family's closed forms against quadrature, autodiff and samples; the input-convex network's
convexity and fit; Bregman divergences against the Gaussian KL; Theorem 1's limit on exact statistics."""

import math

import pytest
import torch
from torch.func import hessian

from support.data.gaussian_family import (
    fisher_metric, log_partition, moments_from_natural, natural_from_moments, sample, sufficient_statistics,
)
from support.models.convex_potential import (
    InputConvexNetwork, bregman_divergence, fit_convex_potential, hessian_metric, scaled_log_posterior,
)

torch.set_default_dtype(torch.float64)
ETAS = natural_from_moments(torch.tensor([-1.0, 0.0, 0.7, 2.0]), torch.tensor([0.3, 1.0, 2.0, 0.5]))


def test_log_partition_is_the_integral_and_its_hessian_the_covariance_of_the_statistics():
    x = torch.linspace(-30, 30, 600_001)
    for eta in ETAS:
        integral = torch.trapezoid(torch.exp(eta[0] * x + eta[1] * x**2), x)
        assert log_partition(eta).item() == pytest.approx(integral.log().item(), rel=1e-9)
        assert torch.allclose(hessian(log_partition)(eta), fisher_metric(eta), atol=1e-10)
    draws = sample(ETAS, 200_000, torch.Generator().manual_seed(0))
    for eta, x_eta in zip(ETAS, draws):
        T = sufficient_statistics(x_eta)
        assert torch.allclose(torch.cov(T.T), fisher_metric(eta), rtol=0.03, atol=0.02)
    mean, variance = moments_from_natural(ETAS)
    assert torch.allclose(natural_from_moments(mean, variance), ETAS)


def test_the_input_convex_network_is_convex_at_initialisation():
    torch.manual_seed(0)
    network = InputConvexNetwork(2, 16, torch.zeros(2), torch.ones(2)).double()
    points = torch.randn(200, 2) * 3
    assert bool((torch.linalg.eigvalsh(hessian_metric(network, points)) > -1e-10).all())


def test_a_potential_fitted_to_exact_means_recovers_the_fisher_metric():
    g = torch.Generator().manual_seed(1)
    mean = 4 * torch.rand(300, generator=g) - 2
    variance = 0.3 + 1.5 * torch.rand(300, generator=g)
    eta = natural_from_moments(mean, variance)
    statistics = torch.stack([mean, variance + mean**2], dim=1)  # E[T] = grad log Z
    network = fit_convex_potential(eta, statistics, hidden=32, steps=4000, generator=g)
    inner = natural_from_moments(torch.tensor([-1.0, 0.0, 0.5, 1.0]), torch.tensor([0.6, 0.8, 1.0, 1.2]))
    found, exact = hessian_metric(network, inner), fisher_metric(inner)
    relative = torch.linalg.matrix_norm(found - exact) / torch.linalg.matrix_norm(exact)
    assert relative.max() < 0.15, relative


def test_the_bregman_divergence_of_the_log_partition_is_the_gaussian_kl():
    reference = ETAS[1]
    m0, v0 = moments_from_natural(reference)
    m1, v1 = moments_from_natural(ETAS)
    kl = 0.5 * (torch.log(v1 / v0) + (v0 + (m0 - m1) ** 2) / v1 - 1)  # KL(p_reference || p_eta)
    assert torch.allclose(bregman_divergence(log_partition, ETAS, reference), kl, atol=1e-12)


def test_with_exact_statistics_the_scaled_posterior_is_minus_the_bregman_divergence():
    e1, e2 = torch.meshgrid(torch.linspace(-2, 2, 41), torch.linspace(-2, -0.25, 36), indexing="ij")
    grid = torch.stack([e1.flatten(), e2.flatten()], dim=1)
    reference = grid[500]
    m, v = moments_from_natural(reference)
    exact_mean = torch.stack([m, v + m**2])
    posterior = scaled_log_posterior(log_partition(grid), grid, exact_mean)
    assert torch.allclose(posterior, -bregman_divergence(log_partition, grid, reference), atol=1e-10)
    assert int(posterior.argmax()) == 500 and not math.isnan(posterior.sum().item())


def test_bad_natural_parameters_are_refused():
    with pytest.raises(ValueError, match="negative"):
        log_partition(torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="shape"):
        fit_convex_potential(torch.zeros(3, 2), torch.zeros(3, 1), 4, 1, torch.Generator())
