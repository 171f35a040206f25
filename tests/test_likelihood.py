"""Exact flow likelihood (Sec. 3.1) and the posterior predictive (eq 22) against closed forms."""

import math

import pytest
import torch

from support.core.parameters import flatten, select_parameters
from support.models.flow_matching import VelocityMLP
from support.models.likelihood import (
    ensemble_log_likelihoods,
    flow_log_likelihood,
    generative_uncertainty,
    posterior_predictive_log_density,
    velocity_and_divergence,
)

torch.set_default_dtype(torch.float64)

A = torch.tensor([[0.4, -0.3], [0.2, -0.1]])
B = torch.tensor([0.5, -1.0])


def linear_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """u(x, t) = (1 + t) A x + B: the flow maps N(0, I) to a Gaussian with known mean and covariance."""
    return (1 + t)[:, None] * (x @ A.T) + B


def linear_flow_gaussian() -> tuple[torch.Tensor, torch.Tensor]:
    """x(1) = M x0 + c with M = exp(1.5 A) (since int_0^1 (1 + t) dt = 1.5) and c from the ODE, by a fine solve."""
    m = torch.linalg.matrix_exp(1.5 * A)
    # c solves dc/dt = (1 + t) A c + B, c(0) = 0: RK4 with 20,000 steps as the reference
    c, h = torch.zeros(2), 1 / 20_000
    f = lambda t, y: (1 + t) * (A @ y) + B
    for i in range(20_000):
        t = i * h
        k1 = f(t, c); k2 = f(t + h / 2, c + h / 2 * k1); k3 = f(t + h / 2, c + h / 2 * k2); k4 = f(t + h, c + h * k3)
        c = c + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return m, c


def test_divergence_is_the_jacobian_trace_and_hutchinson_is_unbiased():
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    t = torch.full((5,), 0.3)
    u, exact = velocity_and_divergence(linear_field, x, t)
    assert torch.allclose(u, linear_field(x, t), atol=1e-14)
    assert torch.allclose(exact, torch.full((5,), 1.3 * A.trace().item()), atol=1e-12)
    model = VelocityMLP(2, (8,))
    brute = torch.stack([torch.func.jacfwd(lambda y: model(y[None], t[:1])[0])(row).trace() for row in x])
    assert torch.allclose(velocity_and_divergence(model, x, t)[1], brute, atol=1e-12)
    g = torch.Generator().manual_seed(1)
    noise = (torch.randint(0, 2, (20_000, 5, 2), generator=g) * 2 - 1).double()
    estimates = torch.stack([velocity_and_divergence(model, x, t, "hutchinson", n)[1] for n in noise[:2000]])
    assert torch.allclose(estimates.mean(0), brute, atol=4 * estimates.std(0).max().item() / math.sqrt(2000))
    with pytest.raises(ValueError, match="noise"):
        velocity_and_divergence(model, x, t, "hutchinson")
    with pytest.raises(ValueError, match="method"):
        velocity_and_divergence(model, x, t, "trace")


def test_log_likelihood_of_a_linear_flow_matches_the_gaussian_density():
    m, c = linear_flow_gaussian()
    x1 = torch.randn(50, 2, generator=torch.Generator().manual_seed(2)) * 1.5 + c
    got = flow_log_likelihood(linear_field, x1, rtol=1e-10, atol=1e-12)
    expected = torch.distributions.MultivariateNormal(c, m @ m.T).log_prob(x1)
    assert torch.allclose(got, expected, atol=1e-7)
    rk4 = flow_log_likelihood(linear_field, x1, method="rk4", steps=50)
    assert torch.allclose(rk4, expected, atol=1e-6)
    hutchinson = flow_log_likelihood(linear_field, x1, rtol=1e-10, atol=1e-12, divergence_method="hutchinson",
                                     generator=torch.Generator().manual_seed(3))
    # J = (1 + t) A, so eps^T J eps = (1 + t)(tr A + (A12 + A21) eps1 eps2) with eps_i^2 = 1: integrated over
    # t in [0, 1] the estimate is off by exactly 1.5 (A12 + A21) eps1 eps2 = +-0.15 for every row
    error = (hutchinson - expected).abs()
    assert torch.allclose(error, torch.full_like(error, 1.5 * abs(A[0, 1] + A[1, 0]).item()), atol=1e-6)


def test_a_network_density_integrates_to_one():
    torch.manual_seed(0)
    model = VelocityMLP(1, (16,))
    grid = torch.linspace(-8, 8, 1601)[:, None]
    density = flow_log_likelihood(model, grid).exp()
    assert torch.trapezoid(density, grid[:, 0]).item() == pytest.approx(1.0, abs=1e-4)


def test_posterior_predictive_is_the_log_mean_exp_of_the_members():
    torch.manual_seed(1)
    model = VelocityMLP(1, (8,))
    layout = select_parameters(model)
    theta = flatten(model, layout)
    thetas = theta + 0.3 * torch.randn(5, layout.dim, generator=torch.Generator().manual_seed(4))
    x = torch.linspace(-3, 3, 7)[:, None]
    members = []
    for row in thetas:
        copy = VelocityMLP(1, (8,))
        torch.nn.utils.vector_to_parameters(row, copy.parameters())
        members.append(flow_log_likelihood(copy, x))
    got = ensemble_log_likelihoods(model, layout, thetas, x, models_per_solve=2)
    assert torch.allclose(got, torch.stack(members), atol=1e-6)
    expected = torch.logsumexp(torch.stack(members), 0) - math.log(5)
    assert torch.allclose(posterior_predictive_log_density(got), expected, atol=1e-6)
    gap = generative_uncertainty(got)
    assert bool((gap >= 0).all())
    assert torch.allclose(generative_uncertainty(got[:1].expand(3, -1)), torch.zeros(7), atol=1e-12)  # identical models
    with pytest.raises(ValueError, match="thetas"):
        ensemble_log_likelihoods(model, layout, thetas[:, :3], x)


@pytest.mark.parametrize("x1, options, message", [
    (torch.tensor([[0.0, 0.0], [float("nan"), 0.0]]), {}, r"non-finite values in rows \[1\]"),
    (torch.tensor([[0.0, 0.0], [0.0, float("inf")]]), {"method": "rk4"}, r"non-finite values in rows \[1\]"),
    (torch.zeros(0, 2), {}, "B >= 1"),
    (torch.zeros(3, 2), {"method": "rk4", "steps": 0}, "positive integer number of steps"),
    (torch.zeros(3, 2), {"method": "euler", "steps": 2.5}, "positive integer number of steps"),
    (torch.zeros(3, 2), {"rtol": 0.0, "atol": 0.0}, "positive rtol and atol"),
    (torch.zeros(3, 2), {"rtol": -1e-6}, "positive rtol and atol"),
])
def test_bad_likelihood_input_is_refused_with_its_cause(x1, options, message):
    """#21: NaN or empty input used to die in a torchdiffeq assertion, steps=0 in a ZeroDivisionError."""
    with pytest.raises(ValueError, match=message):
        flow_log_likelihood(linear_field, x1.double(), **options)


def test_the_posterior_predictive_of_no_models_is_refused():
    with pytest.raises(ValueError, match="S >= 1 models"):
        posterior_predictive_log_density(torch.zeros(0, 4))
