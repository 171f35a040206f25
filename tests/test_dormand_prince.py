"""The per-row embedded pairs (dopri5, dopri8) against closed forms, torchdiffeq and themselves row by row."""

import math

import pytest
import torch
from torchdiffeq import odeint

from support.core.dormand_prince import COLLAPSED, CONVERGED, DOPRI5, DOPRI8, OVER_NFE, OVER_TIME, PAIRS, solve_rows

FREQUENCIES = torch.tensor([0.5, 1.0, 3.0, 12.0], dtype=torch.float64)


def oscillators(y: torch.Tensor) -> torch.Tensor:
    """Row i: x'' = -w_i^2 x with w_i carried as a constant third component."""
    return torch.stack([y[:, 1], -y[:, 2].square() * y[:, 0], torch.zeros_like(y[:, 0])], dim=1)


def start(w: torch.Tensor = FREQUENCIES) -> torch.Tensor:
    return torch.stack([torch.ones_like(w), torch.zeros_like(w), w], dim=1)


@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS)
@pytest.mark.parametrize("rtol", [1e-5, 1e-8])
def test_dense_output_matches_the_closed_form_to_the_tolerance(rtol, pair):
    times = torch.linspace(0, 1, 41, dtype=torch.float64)
    states, status, _ = solve_rows(oscillators, start(), times, rtol, rtol * 1e-2, pair=pair)
    exact = torch.cos(FREQUENCIES[None] * times[:, None])
    error = (states[..., 0] - exact).abs()
    assert bool((status == CONVERGED).all())
    assert float(error.max()) < 50 * rtol  # global error of the pair at this local tolerance
    assert torch.equal(states[0], start())


def test_interior_outputs_are_as_accurate_as_step_ends():
    """Hairer's continuous extension: interpolated times are no worse than times a step ends on."""
    w = FREQUENCIES[-1:]
    dense = torch.linspace(0, 1, 201, dtype=torch.float64)
    states, _, _ = solve_rows(oscillators, start(w), dense, 1e-6, 1e-8)
    interior = (states[1:-1, 0, 0] - torch.cos(w * dense[1:-1])).abs().max()
    end = (states[-1, 0, 0] - torch.cos(w)).abs().max()
    assert float(interior) < 3 * float(end) + 1e-9


@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS)
def test_each_row_is_solved_as_if_it_were_alone(pair):
    times = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    batch, _, nfe = solve_rows(oscillators, start(), times, 1e-7, 1e-9, pair=pair)
    for i in range(len(FREQUENCIES)):
        alone, _, nfe_alone = solve_rows(oscillators, start()[i:i + 1], times, 1e-7, 1e-9, pair=pair)
        assert torch.equal(alone[:, 0], batch[:, i]) and int(nfe_alone) == int(nfe[i])
    assert nfe[-1] > 3 * nfe[0]  # the fast oscillator takes many more steps than the slow one


@pytest.mark.parametrize("pair", [DOPRI5, DOPRI8], ids=["dopri5", "dopri8"])  # the pairs torchdiffeq has
def test_agrees_with_torchdiffeq_on_one_row(pair):
    """The same method as torchdiffeq's pair of that name for one row: accuracy and cost of the same order."""
    w = FREQUENCIES[2:3]
    times = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ours, _, nfe = solve_rows(oscillators, start(w), times, 1e-8, 1e-10, pair=pair)
    calls = []
    # without a dense output our steps end at the output times; torchdiffeq's step_t does the same
    options = {} if pair.dense is not None else {"step_t": times}
    ref = odeint(lambda t, y: calls.append(1) or oscillators(y), start(w), times, method=pair.name, rtol=1e-8,
                 atol=1e-10, options=options)
    exact = torch.cos(w)
    assert abs(float(ours[-1, 0, 0] - exact)) < 2e-7 and abs(float(ref[-1, 0, 0] - exact)) < 2e-7
    assert 0.6 < int(nfe) / len(calls) < 1.4


@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS)
def test_the_coefficients_satisfy_the_order_conditions(pair):
    """An order-p solution satisfies the quadrature conditions b . c^(k-1) = 1/k and the tall-tree ones
    b . A^(k-1) 1 = 1/k! for k <= p (Hairer-Norsett-Wanner II.2); the embedded solution b - e, with f(y_new)
    as a last stage, satisfies them for k <= p - 1 and not for k = p, so the error estimate is of order p."""
    stages = len(pair.b) + 1
    a = torch.zeros(stages, stages, dtype=torch.float64)
    for i, row in enumerate(pair.a):
        a[i + 1, :len(row)] = torch.tensor(row, dtype=torch.float64)
    a[-1, :-1] = torch.tensor(pair.b, dtype=torch.float64)  # the FSAL stage is f(y_new)
    c, ones = a.sum(dim=1), torch.ones(stages, dtype=torch.float64)
    b = torch.cat([torch.tensor(pair.b, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    embedded = b - torch.tensor(pair.e, dtype=torch.float64)

    def residuals(weights: torch.Tensor, k: int) -> tuple[float, float]:
        return (abs(float(weights @ c ** (k - 1)) - 1 / k),
                abs(float(weights @ torch.linalg.matrix_power(a, k - 1) @ ones) - 1 / math.factorial(k)))

    for k in range(1, pair.order + 1):
        assert max(residuals(b, k)) < 1e-13
    for k in range(1, pair.order):
        assert max(residuals(embedded, k)) < 1e-13
    assert max(residuals(embedded, pair.order)) > 1e-8


def test_dopri8_reaches_a_tight_tolerance_with_fewer_evaluations():
    """At rtol 1e-10 the 8th-order pair needs fewer evaluations than the 5th-order one for the same accuracy."""
    times = torch.tensor([0.0, 1.0], dtype=torch.float64)
    exact = torch.cos(FREQUENCIES)
    used = {}
    for pair in (DOPRI5, DOPRI8):
        states, _, nfe = solve_rows(oscillators, start(), times, 1e-10, 1e-12, pair=pair)
        assert float((states[-1, :, 0] - exact).abs().max()) < 1e-8
        used[pair.name] = nfe
    assert bool((used["dopri8"] < 0.8 * used["dopri5"]).all())


@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS)
def test_budgets_and_collapse_flag_single_rows(pair):
    times = torch.tensor([0.0, 1.0], dtype=torch.float64)
    _, _, nfe = solve_rows(oscillators, start(), times, 1e-8, 1e-10, pair=pair)
    budget = int(nfe[1])
    states, status, used = solve_rows(oscillators, start(), times, 1e-8, 1e-10, max_nfe=budget, pair=pair)
    assert status.tolist() == [CONVERGED, CONVERGED, OVER_NFE, OVER_NFE]
    assert bool((used <= budget).all()) and torch.isnan(states[-1, 2:]).all()
    _, timed, _ = solve_rows(oscillators, start(), times, 1e-8, 1e-10, max_seconds=0.0, pair=pair)
    assert bool((timed == OVER_TIME).all())

    def blows_up(y):  # x' = c x^2 from x = 1: x = 1 / (1 - c t), infinite at t = 1/c (second row: t = 0.5)
        return torch.stack([y[:, 0].square() * y[:, 1], torch.zeros_like(y[:, 1])], dim=1)

    y0 = torch.tensor([[1.0, 0.5], [1.0, 2.0]], dtype=torch.float64)
    finished = []
    states, status, _ = solve_rows(blows_up, y0, times, 1e-8, 1e-10, on_finish=finished.append, pair=pair)
    assert status.tolist() == [CONVERGED, COLLAPSED]
    assert abs(float(states[-1, 0, 0]) - 2.0) < 1e-6  # c = 1/2: x(1) = 1 / (1 - 1/2)
    collapsed = [f for f in finished if int(f.status[0]) == COLLAPSED][0]
    assert abs(float(collapsed.times_reached[0]) - 0.5) < 1e-3 and torch.isnan(states[:, 1]).all()
