"""Spacetime geometry of denoising (003): posteriors against Bayes by quadrature and the closed-form field,
the Fisher metric against the Hessian of the log-partition, lengths against exact categorical distances,
and DiffED against the distance pi between two point masses."""

import math

import pytest
import torch
from torch.func import hessian

from support.data.toy_data import IsotropicGMM
from support.evaluation.spacetime import (
    DataMixture, categorical_arc_lengths, categorical_chord_lengths, data_points_in_spacetime, denoising_posterior, diffed_curves,
    natural_parameters, segment_lengths, spline_basis, statistic_covariance, straight_curves,
)
from support.models.flow_matching import closed_form_velocity

torch.set_default_dtype(torch.float64)


def test_the_posterior_of_a_mixture_is_bayes_rule_by_quadrature():
    data = DataMixture(torch.tensor([[-1.0], [0.8]]), torch.tensor([0.3, 0.05]), torch.tensor([0.3, 0.7]))
    y = torch.linspace(-6, 6, 200_001)
    prior = sum(w * torch.exp(-0.5 * (y - m) ** 2 / v) / math.sqrt(2 * math.pi * v)
                for w, m, v in zip(data.weights, data.means[:, 0], data.variances))
    for x, t in ((0.3, 0.4), (-0.5, 0.8), (1.1, 0.95)):
        likelihood = torch.exp(-0.5 * (x - t * y) ** 2 / (1 - t) ** 2)
        density = prior * likelihood
        density = density / torch.trapezoid(density, y)
        moment = lambda f: torch.trapezoid(density * f, y).item()
        T = torch.stack([y, y**2])
        mean_T = [moment(T[0]), moment(T[1])]
        covariance = torch.tensor([[moment((T[i] - mean_T[i]) * (T[j] - mean_T[j])) for j in range(2)] for i in range(2)])
        found = statistic_covariance(denoising_posterior(data, torch.tensor([[x]]), torch.tensor([t])))[0]
        assert torch.allclose(found, covariance, rtol=1e-5, atol=1e-9), (x, t, found, covariance)


def test_the_empirical_posterior_mean_is_the_closed_form_field_and_its_metric_the_log_partition_hessian():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(5, 2, generator=g)
    data = DataMixture.empirical(train)
    x, t = torch.randn(7, 2, generator=g), torch.rand(7, generator=g) * 0.8 + 0.1
    posterior = denoising_posterior(data, x, t)
    mean = (posterior.weights[..., None] * posterior.means).sum(-2)
    assert torch.allclose(mean, x + (1 - t)[:, None] * closed_form_velocity(x, t, train), atol=1e-12)
    statistic = torch.cat([train, train.square().sum(1, keepdim=True)], dim=1)  # T(y_i)
    log_partition = lambda eta: torch.logsumexp(statistic @ eta, dim=0)
    eta = natural_parameters(x, t)
    for i in range(len(x)):
        assert torch.allclose(statistic_covariance(denoising_posterior(data, x[i:i + 1], t[i:i + 1]))[0],
                              hessian(log_partition)(eta[i]), atol=1e-10)


def test_metric_lengths_converge_to_the_exact_categorical_distances():
    train = torch.tensor([[-1.0, 0.0], [0.0, 0.5], [1.0, 0.0]])
    data = DataMixture.empirical(train)
    s = torch.linspace(0, 1, 4001)
    curve = torch.stack([-1.2 + 2.4 * s, 0.3 * torch.sin(math.pi * s), 0.5 - 0.2 * torch.sin(math.pi * s)], dim=1)[None]
    by_metric = segment_lengths(data)(curve).sum().item()
    exact = categorical_arc_lengths(data)(curve).sum().item()
    assert by_metric == pytest.approx(exact, rel=1e-4)
    chords = categorical_chord_lengths(data)(curve)
    assert bool((chords <= categorical_arc_lengths(data)(curve) + 1e-12).all())  # a chord never beats its arc
    assert chords.sum().item() == pytest.approx(exact, rel=1e-5)
    assert exact > 0.5


def test_two_training_points_are_pi_apart_and_the_geodesic_is_no_longer_than_the_straight_line():
    train = torch.tensor([[-0.5, 0.0], [0.5, 0.0]])
    data = DataMixture.empirical(train)
    ends = data_points_in_spacetime(train, 0.9)  # noise level (1 - t) / t = 0.11: point masses
    curves = diffed_curves(categorical_chord_lengths(data), ends[:1], ends[1:], points=64, controls=6, steps=400)
    exact = categorical_arc_lengths(data)(curves.points).sum().item()
    assert exact == pytest.approx(math.pi, rel=0.01)  # the Fisher-Rao distance between two point masses
    end_to_end = categorical_arc_lengths(data)(torch.stack([ends[0], ends[1]])[None]).item()
    assert end_to_end == pytest.approx(math.pi, abs=1e-6)
    # a sum of exact segment distances is never below the end-to-end distance (up to arccos's resolution
    # near 1, about 1e-8 for the many nearly identical segments at the ends)
    assert exact >= end_to_end - 1e-8
    straight = categorical_arc_lengths(data)(straight_curves(ends[:1], ends[1:], 64)).sum().item()
    assert straight >= exact - 1e-6
    assert curves.energy_history[-1] < curves.energy_history[0]


def test_a_point_between_two_others_makes_the_straight_line_longer_than_the_geodesic():
    train = torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    data = DataMixture.empirical(train)
    ends = data_points_in_spacetime(train[[0, 2]], 0.9)
    curves = diffed_curves(categorical_chord_lengths(data), ends[:1], ends[1:], points=64, controls=6, steps=600)
    exact = categorical_arc_lengths(data)(curves.points).sum().item()
    straight = categorical_arc_lengths(data)(straight_curves(ends[:1], ends[1:], 2001)).sum().item()
    assert straight == pytest.approx(2 * math.pi, rel=0.01)  # through the middle point mass: pi + pi
    assert math.pi < exact < straight - 0.5  # the geodesic goes into noise, around the middle point
    assert float(curves.points[0, :, -1].min()) < 0.9  # ... at a lower t than its ends


def test_the_exact_denoiser_of_a_mixture_has_finite_lengths_and_shorter_geodesics():
    target = IsotropicGMM(torch.tensor([[1.5, 1.5], [-1.5, -1.5]]), torch.tensor([0.2, 0.2]))
    data = DataMixture.of_target(target)
    ends = data_points_in_spacetime(torch.tensor([[1.0, 1.9], [1.9, 1.1]]), 0.9)
    curves = diffed_curves(segment_lengths(data), ends[:1], ends[1:], points=48, controls=6, steps=400)
    assert bool(torch.isfinite(curves.lengths).all()) and 0 < curves.lengths.item() <= curves.straight_lengths.item()


def test_the_spline_offsets_keep_the_ends_fixed():
    basis = spline_basis(50, 5)
    assert basis.shape == (50, 5)
    assert basis[0].abs().max() == 0 and basis[-1].abs().max() == 0
    assert bool((basis >= 0).all()) and bool((basis.sum(1) <= 1 + 1e-12).all())


def test_times_outside_the_open_interval_are_refused():
    data = DataMixture.empirical(torch.zeros(2, 1))
    with pytest.raises(ValueError, match="open interval"):
        denoising_posterior(data, torch.zeros(1, 1), torch.tensor([1.0]))
    for lengths in (categorical_arc_lengths, categorical_chord_lengths):
        with pytest.raises(ValueError, match="empirical"):
            lengths(DataMixture(torch.zeros(1, 1), torch.ones(1), torch.ones(1)))
