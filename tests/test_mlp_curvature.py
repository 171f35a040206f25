"""MLPRegressionLoss (eq 19's grad L and v^T H v by hand) against torch.func on the nn.Sequential itself and
against finite differences of the loss."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from support.core.monge_metric import CurvatureLoss, geodesic_acceleration
from support.core.mlp_curvature import MLPRegressionLoss

torch.set_default_dtype(torch.float64)


def network(activation: type[nn.Module], widths: tuple[int, ...], seed: int = 0):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for depth, (i, o) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(i, o))
        if depth < len(widths) - 2:
            layers.append(activation())
    net = nn.Sequential(*layers)
    x, y = torch.randn(50, widths[0]), torch.randn(50, widths[-1])
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    sizes = [p.numel() for p in net.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def reference(flat: torch.Tensor) -> torch.Tensor:  # the module's own forward, not the class's
        params = {n: t.reshape(s) for n, t, s in zip(names, flat.split(sizes), shapes)}
        return (functional_call(net, params, (x,)) - y).square().sum(dim=1).mean()

    return net, x, y, theta, reference


@pytest.mark.parametrize("activation, widths", [(nn.Tanh, (1, 8, 8, 1)), (nn.SiLU, (3, 6, 5, 2)), (nn.SiLU, (2, 7, 1))])
def test_gradient_and_curvature_match_autodiff_of_the_module(activation, widths):
    net, x, y, theta, reference = network(activation, widths)
    loss = MLPRegressionLoss.from_sequential(net, x, y)
    assert loss.dim == theta.numel()
    generator = torch.Generator().manual_seed(1)
    thetas = theta + 0.5 * torch.randn(4, theta.numel(), generator=generator)
    velocities = torch.randn(4, theta.numel(), generator=generator)
    assert torch.allclose(torch.stack([loss(t) for t in thetas]), torch.stack([reference(t) for t in thetas]),
                          rtol=1e-13, atol=0)
    gradient, curvature = loss.gradient_and_curvature(thetas, velocities)
    expected_gradient = vmap(grad(reference))(thetas)
    hv = vmap(lambda t, v: jvp(grad(reference), (t,), (v,))[1])(thetas, velocities)
    assert torch.allclose(gradient, expected_gradient, rtol=1e-12, atol=1e-14)
    assert torch.allclose(curvature, (hv * velocities).sum(dim=1), rtol=1e-11, atol=1e-13)
    # a second, derivative-free oracle: the central second difference of L along v
    step = 1e-4
    second_difference = torch.stack([(reference(t + step * v) - 2 * reference(t) + reference(t - step * v)) / step**2
                                     for t, v in zip(thetas, velocities)])
    assert torch.allclose(curvature, second_difference, rtol=1e-5, atol=1e-7)


def test_geodesic_acceleration_takes_eq_19_by_hand_from_it_for_one_and_for_many_curves():
    net, x, y, theta, reference = network(nn.SiLU, (2, 6, 6, 1), seed=3)
    loss = MLPRegressionLoss.from_sequential(net, x, y)
    assert isinstance(loss, CurvatureLoss) and not isinstance(reference, CurvatureLoss)
    thetas = theta + 0.3 * torch.randn(3, theta.numel())
    velocities = torch.randn(3, theta.numel())
    gradient, curvature = loss.gradient_and_curvature(thetas, velocities)
    by_hand = -(curvature / (1 + gradient.square().sum(dim=1)))[:, None] * gradient
    dispatched = geodesic_acceleration(loss, thetas, velocities)
    assert torch.equal(dispatched, by_hand)  # the by-hand pass, not an HVP
    autodiff = geodesic_acceleration(reference, thetas, velocities, "reverse")
    assert torch.allclose(dispatched, autodiff, rtol=1e-11, atol=1e-14)
    assert torch.allclose(geodesic_acceleration(loss, thetas[1], velocities[1]), autodiff[1], rtol=1e-11, atol=1e-14)
    with pytest.raises(ValueError, match="no rows"):
        geodesic_acceleration(loss, thetas[:0], velocities[:0])


def test_unsupported_networks_and_bad_shapes_are_refused():
    x, y = torch.randn(5, 2), torch.randn(5, 1)
    with pytest.raises(ValueError, match="activation ReLU"):
        MLPRegressionLoss.from_sequential(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)), x, y)
    with pytest.raises(ValueError, match="one activation type"):
        MLPRegressionLoss.from_sequential(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.SiLU(),
                                                        nn.Linear(3, 1)), x, y)
    with pytest.raises(ValueError, match="with biases"):
        MLPRegressionLoss.from_sequential(nn.Sequential(nn.Linear(2, 3, bias=False), nn.Tanh(), nn.Linear(3, 1)), x, y)
    with pytest.raises(ValueError, match="do not fit"):
        MLPRegressionLoss.from_sequential(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(4, 1)), x, y)
    with pytest.raises(ValueError, match="inputs must have shape"):
        MLPRegressionLoss((2, 3, 1), nn.Tanh, x[:, :1], y)
    loss = MLPRegressionLoss((2, 3, 1), nn.Tanh, x, y)
    with pytest.raises(ValueError, match=r"theta must have shape \[13\]"):
        loss(torch.zeros(12))
    with pytest.raises(ValueError, match=r"shape \[S, 13\]"):
        loss.gradient_and_curvature(torch.zeros(13), torch.zeros(13))
