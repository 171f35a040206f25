"""Scattered-node quadrature and Gaussian smoothing against closed forms and numpy."""

import math

import pytest
import torch

from support.evaluation.quadrature import adaptive_quadrature, gaussian_smoothing

torch.set_default_dtype(torch.float64)


def mixture_log_density(x: torch.Tensor, centre: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """log of 0.5 N(x; 0, I) + 0.5 N(x; centre, diag(width^2))."""
    wide = -0.5 * x.square().sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    narrow = (-0.5 * ((x - centre) / width).square().sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
              - width.log().sum())
    return torch.logaddexp(wide, narrow) - math.log(2)


@pytest.mark.parametrize("d", [1, 2])
def test_a_hidden_peak_is_found_through_the_samples(d):
    g = torch.Generator().manual_seed(d)
    centre, width = torch.full((d,), 5.37), torch.tensor([0.003, 0.02][:d])  # off the lattice, in the far tail
    samples = torch.cat([torch.randn(1000, d, generator=g), centre + width * torch.randn(1000, d, generator=g)])
    calls = []

    def log_density(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return mixture_log_density(x, centre, width)

    found = adaptive_quadrature(log_density, 8.0, 32, samples, max_levels=12, tolerance=1e-5)
    assert abs(found.integral - 1) < 2e-3 and found.unresolved_cells == 0
    assert sum(calls) == len(found.nodes)  # every node evaluated once, one batch per level
    assert len(calls) == found.levels_used
    # without the samples the same error estimate never sees the peak: only the N(0, I) half is found
    blind = adaptive_quadrature(lambda x: mixture_log_density(x, centre, width), 8.0, 32, samples[:0], max_levels=12,
                                tolerance=1e-5)
    assert abs(blind.integral - 0.5) < 2e-3


def test_cells_are_exact_for_multilinear_densities():
    field = lambda x: torch.log(2 + x[:, 0] + 0.5 * x[:, 1] + 0.2 * x[:, 0] * x[:, 1])
    result = adaptive_quadrature(field, 1.0, 4, torch.zeros(0, 2), max_levels=3)
    assert abs(result.integral - 8) < 1e-12 and result.levels_used == 1
    assert abs(result.weights.sum().item() - 4) < 1e-12


def test_gaussian_smoothing_is_a_kde_and_a_convolution():
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(500, 1, generator=g)
    points = torch.linspace(-3, 3, 13)[:, None]
    kde = gaussian_smoothing(points, centres, torch.full((500,), 1 / 500), 0.3, chunk=5)
    brute = torch.stack([torch.exp(-0.5 * ((p - centres[:, 0]) / 0.3) ** 2).mean() / math.sqrt(2 * math.pi * 0.09)
                         for p in points[:, 0]])
    assert torch.allclose(kde, brute, atol=1e-12)
    # N(0, 1) convolved with N(0, h^2) is N(0, 1 + h^2), by quadrature
    normal = adaptive_quadrature(lambda x: -0.5 * x[:, 0] ** 2 - 0.5 * math.log(2 * math.pi), 10.0, 2000,
                                 torch.zeros(0, 1), max_levels=1)
    smoothed = gaussian_smoothing(points, normal.nodes, normal.weights * normal.log_density.exp(), 0.5)
    expected = torch.exp(-0.5 * points[:, 0] ** 2 / 1.25) / math.sqrt(2 * math.pi * 1.25)
    assert torch.allclose(smoothed, expected, atol=1e-6)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        adaptive_quadrature(lambda x: x[:, 0], 1.0, 4, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="max_levels"):
        adaptive_quadrature(lambda x: x[:, 0], 1.0, 4, torch.zeros(5, 1), max_levels=0)
    with pytest.raises(FloatingPointError, match="non-finite"):
        adaptive_quadrature(lambda x: x[:, 0].log(), 1.0, 4, torch.zeros(5, 1))
    with pytest.raises(ValueError, match="one weight"):
        gaussian_smoothing(torch.zeros(3, 1), torch.zeros(4, 1), torch.ones(3), 1.0)
    with pytest.raises(ValueError, match="bandwidth"):
        gaussian_smoothing(torch.zeros(3, 1), torch.zeros(4, 1), torch.ones(4), 0.0)
    with pytest.raises(ValueError, match="alike"):
        gaussian_smoothing(torch.zeros(3, 2), torch.zeros(4, 1), torch.ones(4), 1.0)
