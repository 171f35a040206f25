"""The latent-geometry chapter's stages on small inputs: DiffED of copies is zero and grows with distance,
Theorem 1's error falls with N, a map without boundaries is refused."""

import dataclasses

import pytest
import torch

from support.data.toy_data import gmm_2d
from support.evaluation.latent_phases import PhaseMap
from support.evaluation.spacetime import DataMixture
from support.experiments.latent_geometry import BoundarySummary, bregman_concentration, diffed_to_training, fit_family_metric
from support.experiments.toy_2d import memorised_points_2d
from support.infra.profiles import get_profile

torch.set_default_dtype(torch.float64)
SIZES = dataclasses.replace(get_profile("smoke").latent_geometry, curve_steps=300, family_steps=300,
                            family_parameters=64, bregman_sizes=(10, 10_000))


def test_diffed_of_a_copy_is_zero_and_grows_with_the_distance_to_the_training_points():
    target = gmm_2d(torch.float64)
    train = memorised_points_2d(target)
    direction = torch.tensor([0.6, 0.8])
    samples = torch.stack([train[0], train[0] + 0.1 * direction, train[0] + 0.4 * direction])
    found = diffed_to_training(DataMixture.of_target(target), samples, train, SIZES)
    assert found[0] < 1e-3 and found[0] < found[1] < found[2], found


def test_theorem_1s_error_falls_with_the_number_of_samples():
    g = torch.Generator().manual_seed(0)
    fit = fit_family_metric(SIZES, g, torch.float64)
    check = bregman_concentration(SIZES, fit.potential, g, torch.float64)
    assert check.errors[1] < 0.1 * check.errors[0], check.errors  # means over BREGMAN_DRAWS samples of each size
    assert len(check.standard_errors) == len(check.errors) and all(se > 0 for se in check.standard_errors)
    assert len(fit.relative_errors) == len(fit.test_eta) and bool((fit.relative_errors >= 0).all())


def test_a_phase_map_without_boundaries_is_refused():
    flat = PhaseMap(torch.zeros(3), torch.zeros(3, 3, dtype=torch.long), torch.ones(3, 3), torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no boundary"):
        BoundarySummary.of(flat)
