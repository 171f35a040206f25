"""Flow matching (support.models.flow_matching) against closed forms and independent computations."""

import math

import pytest
import torch
from torch.func import grad

from support.core.laplace import exact_hessian
from support.core.parameters import parameter_loss

from support.models.flow_matching import (
    VelocityMLP,
    closed_form_velocity,
    conditional_path,
    deterministic_dataset,
    empirical_score,
    flow_matching_loss,
    flow_matching_regression,
    generate,
    relative_field_error,
    sample_path_marginal,
    train_velocity_field,
    velocity_from_score,
)

torch.set_default_dtype(torch.float64)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1)


def test_conditional_path_endpoints_and_midpoint():
    x0, x1 = torch.randn(5, 3), torch.randn(5, 3)
    assert torch.equal(conditional_path(x0, x1, torch.zeros(5)), x0)
    assert torch.allclose(conditional_path(x0, x1, torch.ones(5)), x1)
    assert torch.allclose(conditional_path(x0, x1, torch.full((5,), 0.5)), (x0 + x1) / 2)


def test_deterministic_dataset_layout(gen):
    train = torch.tensor([[-1.5], [1.5], [0.3]])
    data = deterministic_dataset(train, 10, gen)
    assert len(data) == 10
    assert torch.allclose(data.t, torch.arange(1, 11) / 10)  # t_i = i / N, App. C.1
    counts = torch.stack([(data.x1 == p).all(1).sum() for p in train])
    assert counts.tolist() == [4, 3, 3]  # balanced use of the training points
    again = deterministic_dataset(train, 10, torch.Generator().manual_seed(1))
    assert torch.equal(again.x0, data.x0) and torch.equal(again.x1, data.x1)
    assert torch.allclose(data.target, data.x1 - data.x0)
    with pytest.raises(ValueError, match="at least"):
        deterministic_dataset(train, 2, gen)
    with pytest.raises(ValueError, match=r"\[M, D\]"):
        deterministic_dataset(torch.zeros(3), 5, gen)


def test_loss_matches_a_loop_and_vanishes_at_the_single_point_closed_form(gen):
    train = torch.tensor([[0.7, -0.2]])
    data = deterministic_dataset(train, 50, gen)
    field = lambda x, t: closed_form_velocity(x, t.clamp(max=1 - 1e-9), train)
    keep = data.t < 1  # the closed form is singular at t = 1
    sub = type(data)(t=data.t[keep], x0=data.x0[keep], x1=data.x1[keep])
    assert flow_matching_loss(field, sub).item() < 1e-20

    model = VelocityMLP(2, (8,))
    loop = sum(
        ((model(data.xt[i : i + 1], data.t[i : i + 1]) - data.target[i]).square().sum()) for i in range(len(data))
    ) / len(data)
    assert torch.allclose(flow_matching_loss(model, data), loop)


def test_the_regression_form_of_eq_3_is_the_same_function_to_the_last_bit(gen):
    model = VelocityMLP(dim=2, hidden=(5, 4))
    data = deterministic_dataset(torch.randn(3, 2, generator=gen), 12, gen)
    theta, through_model, _ = parameter_loss(model, lambda f: flow_matching_loss(f, data))
    regression = flow_matching_regression(model, data)
    for point in (theta, theta + 0.1 * torch.randn(theta.shape, generator=gen)):
        assert torch.equal(regression(point), through_model(point))
        assert torch.equal(grad(regression)(point), grad(through_model)(point))
    assert torch.equal(exact_hessian(regression, theta), exact_hessian(through_model, theta))


def test_velocity_mlp_shapes_and_errors():
    model = VelocityMLP(3, (16, 16))
    x = torch.randn(7, 3)
    assert model(x, torch.tensor(0.3)).shape == (7, 3)
    assert torch.allclose(model(x, torch.tensor(0.3)), model(x, torch.full((7,), 0.3)))
    with pytest.raises(ValueError, match=r"x must have shape"):
        model(torch.randn(7), torch.tensor(0.3))
    with pytest.raises(ValueError, match=r"t must be"):
        model(x, torch.zeros(5))
    with pytest.raises(ValueError):
        VelocityMLP(0, (4,))


def test_closed_form_velocity_matches_brute_force_and_single_point_formula():
    train = torch.tensor([[-1.5, 0.0], [1.5, 0.5], [0.2, 2.0]])
    x, t = torch.randn(20, 2), torch.rand(20) * 0.95
    got = closed_form_velocity(x, t, train)
    for b in range(20):
        logw = torch.tensor([-((x[b] - t[b] * y).square().sum()) / (2 * (1 - t[b]) ** 2) for y in train])
        w = torch.exp(logw - logw.max())
        w = w / w.sum()
        expected = sum(w[i] * (train[i] - x[b]) for i in range(3)) / (1 - t[b])
        assert torch.allclose(got[b], expected)
    one = train[:1]
    assert torch.allclose(closed_form_velocity(x, t, one), (one - x) / (1 - t[:, None]))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        closed_form_velocity(x, torch.ones(20), train)


def test_empirical_score_is_the_gradient_of_the_log_marginal():
    train = torch.tensor([[-1.5, 0.0], [1.5, 0.5], [0.2, 2.0]])
    x, t = torch.randn(6, 2, requires_grad=True), torch.tensor(0.4)

    def log_marginal(x):
        comps = torch.stack([-(x - t * y).square().sum(1) / (2 * (1 - t) ** 2) for y in train], 1)
        return torch.logsumexp(comps, 1).sum()

    (grad,) = torch.autograd.grad(log_marginal(x), x)
    assert torch.allclose(empirical_score(x.detach(), t, train), grad)


def test_eq6_velocity_from_score_recovers_the_closed_form_field():
    """Eq (5)-(6): the probability-flow velocity built from the score equals the FM minimiser."""
    train = torch.randn(5, 3)
    x, t = torch.randn(40, 3), 0.05 + 0.9 * torch.rand(40)
    via_score = velocity_from_score(x, t, empirical_score(x, t, train))
    assert torch.allclose(via_score, closed_form_velocity(x, t, train), atol=1e-10)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        velocity_from_score(x, torch.zeros(40), x)
    with pytest.raises(ValueError, match="shape of x"):
        velocity_from_score(x, t, x[:, :2])


def test_euler_is_exact_for_the_single_point_closed_form():
    """x_t = t y + (1 - t) x0 solves the single-point field, and Euler reproduces it exactly."""
    y = torch.tensor([[0.3, -2.0]])
    x0 = torch.randn(9, 2)
    field = lambda x, t: closed_form_velocity(x, t, y)
    out = generate(field, x0, method="euler", steps=7)
    assert torch.allclose(out, y.expand(9, -1), atol=1e-12)
    path = generate(field, x0, method="euler", times=torch.tensor([0.0, 0.25, 0.5]))
    assert path.shape == (3, 9, 2)
    assert torch.allclose(path[1], 0.25 * y + 0.75 * x0)


def test_dopri5_matches_the_matrix_exponential_for_a_linear_field():
    a = torch.tensor([[-0.5, 1.0], [-1.0, -0.2]])
    x0 = torch.randn(4, 2)
    out = generate(lambda x, t: x @ a.T, x0, method="dopri5", rtol=1e-10, atol=1e-12)
    assert torch.allclose(out, x0 @ torch.linalg.matrix_exp(a).T, atol=1e-9)
    euler = generate(lambda x, t: x @ a.T, x0, method="euler", steps=2000)
    assert torch.allclose(euler, out, atol=1e-3) and not torch.allclose(euler, out, atol=1e-6)


def test_closed_form_generation_returns_convex_combinations_of_training_points(gen):
    train = torch.tensor([[-1.5], [1.5]])
    x0 = torch.randn(500, 1, generator=gen)
    out = generate(lambda x, t: closed_form_velocity(x, t, train), x0, method="euler", steps=100)
    assert torch.cdist(out, train).min(1).values.max() < 1e-6  # every sample is a training point


def test_generate_validates_and_reports_non_finite_samples():
    x0 = torch.randn(3, 1)
    with pytest.raises(ValueError, match="method"):
        generate(lambda x, t: x, x0, method="rk4")
    with pytest.raises(ValueError, match="shape"):
        generate(lambda x, t: x, torch.randn(3), method="euler")
    with pytest.raises(ValueError, match="increasing"):
        generate(lambda x, t: x, x0, times=torch.tensor([0.0, 0.5, 0.2]))

    def blows_up(x, t):
        v = torch.zeros_like(x)
        v[1] = float("nan")
        return v

    with pytest.raises(FloatingPointError, match=r"samples \[1\]"):
        generate(blows_up, x0, method="euler", steps=3)


def test_training_decreases_the_loss_and_rejects_bad_steps(gen):
    train = torch.tensor([[-1.5], [1.5]])
    data = deterministic_dataset(train, 200, gen)
    torch.manual_seed(0)
    model = VelocityMLP(1, (16,))
    history = train_velocity_field(model, data, 300, 1e-2, progress=False)
    assert history.shape == (300,)
    assert history[-1] < 0.8 * history[0]
    assert math.isclose(history[-1].item(), flow_matching_loss(model, data).item(), rel_tol=1e-2)
    with pytest.raises(ValueError):
        train_velocity_field(model, data, 0, 1e-2)


def test_path_marginal_moments_and_relative_field_error(gen):
    train = torch.tensor([[-1.5], [1.5]])
    x = sample_path_marginal(train, 0.5, 200_000, gen)
    # x_t = t y + (1-t) x0: mean 0, variance t^2 * 1.5^2 + (1-t)^2
    assert abs(x.mean().item()) < 0.01
    assert abs(x.var().item() - (0.25 * 2.25 + 0.25)) < 0.01
    field = lambda x, t: closed_form_velocity(x, t, train)
    assert relative_field_error(field, field, train, 0.3, generator=gen) == 0.0
    doubled = lambda x, t: 2 * field(x, t)
    assert math.isclose(relative_field_error(doubled, field, train, 0.3, generator=gen), 1.0, rel_tol=1e-12)
    with pytest.raises(ValueError):
        sample_path_marginal(train, 1.5, 3)
