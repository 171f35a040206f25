"""Gaussian-mixture targets (support.data.toy_data) against scipy."""

import numpy as np
import pytest
import torch
from scipy import stats

from support.data.toy_data import IsotropicGMM, gmm_1d, gmm_2d
from support.evaluation.divergences import wasserstein_1
from support.experiments.toy_2d import MEMORISED_RADIUS, memorised_points_2d


def test_1d_target_of_section_5_1():
    gmm = gmm_1d()
    assert gmm.means.flatten().tolist() == [-1.5, 1.5]
    assert gmm.variances.tolist() == [0.1, 0.1]
    x = torch.linspace(-4, 4, 101)[:, None].double()
    expected = 0.5 * stats.norm.pdf(x.numpy(), -1.5, 0.1**0.5) + 0.5 * stats.norm.pdf(x.numpy(), 1.5, 0.1**0.5)
    assert np.allclose(gmm.log_prob(x).exp().numpy(), expected.ravel())


def test_2d_density_integrates_to_one_and_matches_scipy():
    gmm = gmm_2d()
    grid = torch.linspace(-5, 5, 401, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    dens = gmm.log_prob(pts).exp()
    assert dens.sum().item() * (grid[1] - grid[0]).item() ** 2 == pytest.approx(1.0, abs=1e-6)
    ref = 0.5 * stats.multivariate_normal([1.5, 1.5], 0.2 * np.eye(2)).pdf(pts[:5].numpy())
    ref += 0.5 * stats.multivariate_normal([-1.5, -1.5], 0.2 * np.eye(2)).pdf(pts[:5].numpy())
    assert np.allclose(dens[:5].numpy(), ref)


def test_sampling_is_exactly_balanced_and_has_the_right_moments():
    gmm = gmm_1d()
    x = gmm.sample(100_001, torch.Generator().manual_seed(0))
    left = x[x[:, 0] < 0]
    assert abs(len(left) - 50_000) <= 1  # balanced up to the remainder (tails cross 0 with p ~ 1e-6)
    assert left.mean().item() == pytest.approx(-1.5, abs=0.01)
    assert left.var().item() == pytest.approx(0.1, rel=0.02)
    again = gmm.sample(100_001, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def test_errors():
    with pytest.raises(ValueError, match=r"\[M, D\]"):
        IsotropicGMM(torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="variances must have shape"):
        IsotropicGMM(torch.zeros(2, 1), torch.ones(3))
    with pytest.raises(ValueError, match="positive"):
        IsotropicGMM(torch.zeros(2, 1), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="positive"):
        gmm_1d().sample(0)
    with pytest.raises(ValueError, match=r"\[N, 1\]"):
        gmm_1d().log_prob(torch.zeros(3, 2, dtype=torch.float64))


def test_the_six_memorised_points_of_appendix_c2():
    target = gmm_2d()
    points = memorised_points_2d(target)
    nearest = torch.cdist(points, target.means).min(dim=1).values
    assert points.shape == (6, 2)
    assert torch.allclose(nearest, torch.full((6,), MEMORISED_RADIUS))  # App. C.2's only condition
    assert torch.allclose(points[3:], -points[:3])  # the point symmetry of p0 and p_*
    # the radius is chosen so that a perfect memoriser sits at the paper's MAP distance W1 = 0.4348
    reference = target.sample(30_000, torch.Generator().manual_seed(0))
    assert wasserstein_1(points, reference) == pytest.approx(0.4348, abs=0.005)
    with pytest.raises(ValueError, match="two-component 2D"):
        memorised_points_2d(gmm_1d())
