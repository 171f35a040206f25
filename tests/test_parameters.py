"""Flat-parameter losses (support.core.parameters): same loss and gradient as the module itself."""

import pytest
import torch
from torch.func import grad

from support.core.parameters import parameter_loss, select_parameters
from support.models.flow_matching import VelocityMLP, deterministic_dataset, flow_matching_loss

torch.set_default_dtype(torch.float64)


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = VelocityMLP(1, (5, 4))
    data = deterministic_dataset(torch.tensor([[-1.5], [1.5]]), 64, torch.Generator().manual_seed(0))
    return model, data


def test_full_closure_matches_module_loss_and_gradient(setup):
    model, data = setup
    theta, loss, layout = parameter_loss(model, lambda f: flow_matching_loss(f, data))
    assert theta.shape == (sum(p.numel() for p in model.parameters()),) == (layout.dim,)
    module_loss = flow_matching_loss(model, data)
    module_loss.backward()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert torch.allclose(loss(theta), module_loss)
    assert torch.allclose(grad(loss)(theta), expected)


def test_subset_closure_freezes_the_rest(setup):
    model, data = setup
    theta, loss, layout = parameter_loss(model, lambda f: flow_matching_loss(f, data), names=["net.0"])
    assert layout.names == ("net.0.weight", "net.0.bias") and theta.shape == (2 * 5 + 5,)
    model.zero_grad()
    flow_matching_loss(model, data).backward()
    expected = torch.cat([model.net[0].weight.grad.reshape(-1), model.net[0].bias.grad])
    assert torch.allclose(grad(loss)(theta), expected)
    shifted = theta + 0.1
    with torch.no_grad():
        model.net[0].weight += 0.1
        model.net[0].bias += 0.1
    assert torch.allclose(loss(shifted), flow_matching_loss(model, data))


def test_layout_errors(setup):
    model, _ = setup
    with pytest.raises(KeyError, match="no parameter or module named 'conv_in'"):
        select_parameters(model, ["conv_in"])
    layout = select_parameters(model, ["net.2.bias"])
    with pytest.raises(ValueError, match=r"shape \[4\]"):
        layout.unflatten(torch.zeros(5))
