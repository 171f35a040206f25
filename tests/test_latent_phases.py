"""Phases and local Lipschitz constants of a flow: Jacobians against the closed form of a linear field and
finite differences, endpoints against ``generate``, boundaries on a hand-made grid."""

import torch

from support.evaluation.latent_phases import (
    euler_endpoints, flow_endpoints_and_jacobians, lipschitz_constants, phase_boundaries, phase_map,
)
from support.models.flow_matching import VelocityMLP, generate

torch.set_default_dtype(torch.float64)


def test_the_jacobian_of_a_linear_field_is_the_power_of_the_euler_step():
    A = torch.tensor([[0.3, -1.2], [0.7, -0.4]])
    steps = 50
    x0 = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    endpoints, jacobians = flow_endpoints_and_jacobians(lambda x, t: x @ A.T, x0, steps)
    step = torch.linalg.matrix_power(torch.eye(2) + A / steps, steps)
    assert torch.allclose(jacobians, step.expand(10, 2, 2), atol=1e-12)
    assert torch.allclose(endpoints, x0 @ step.T, atol=1e-12)
    assert torch.allclose(lipschitz_constants(jacobians), torch.linalg.svdvals(step)[0].expand(10), atol=1e-12)


def test_network_endpoints_are_generates_and_jacobians_match_finite_differences():
    torch.manual_seed(1)
    model = VelocityMLP(dim=2, hidden=(16, 16))
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        endpoints, jacobians = flow_endpoints_and_jacobians(model, x0, 40)
        assert torch.allclose(endpoints, generate(model, x0, method="euler", steps=40), atol=1e-12)
        h = 1e-6
        for d in range(2):
            shift = torch.zeros(2)
            shift[d] = h
            central = (euler_endpoints(model, x0 + shift, 40) - euler_endpoints(model, x0 - shift, 40)) / (2 * h)
            assert torch.allclose(jacobians[..., d], central, atol=1e-7)


def test_boundaries_are_the_points_next_to_another_phase():
    labels = torch.tensor([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    assert phase_boundaries(labels).tolist() == [[False, True, True], [True, True, True], [True, True, True]]
    assert not bool(phase_boundaries(torch.zeros(3, 3, dtype=torch.long)).any())


def test_a_flow_that_sends_each_half_plane_to_one_point_stretches_most_at_the_split():
    train = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    field = lambda x, t: (torch.tanh(4 * x[:, :1]) * torch.tensor([1.0, 0.0]) - x * torch.tensor([0.0, 1.0]))
    found = phase_map(field, train, half_width=2.0, points=41, steps=50)
    assert set(found.labels.unique().tolist()) == {0, 1}
    assert bool(found.boundary[:, 20:22].all()) and not bool(found.boundary[:, :15].any())
    assert found.lipschitz[found.boundary].median() > 2 * found.lipschitz[~found.boundary].median()
    assert bool(found.boundary.flatten()[found.lipschitz.argmax()])  # the peak is on the boundary
    assert found.share_of_phase_changes(found) == 0.0
