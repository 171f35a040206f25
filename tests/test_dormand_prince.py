"""The per-row Dormand-Prince solver against closed forms, torchdiffeq's dopri5 and itself row by row."""

import pytest
import torch
from torchdiffeq import odeint

from support.core.dormand_prince import COLLAPSED, CONVERGED, OVER_NFE, OVER_TIME, solve_rows

FREQUENCIES = torch.tensor([0.5, 1.0, 3.0, 12.0], dtype=torch.float64)


def oscillators(y: torch.Tensor) -> torch.Tensor:
    """Row i: x'' = -w_i^2 x with w_i carried as a constant third component."""
    return torch.stack([y[:, 1], -y[:, 2].square() * y[:, 0], torch.zeros_like(y[:, 0])], dim=1)


def start(w: torch.Tensor = FREQUENCIES) -> torch.Tensor:
    return torch.stack([torch.ones_like(w), torch.zeros_like(w), w], dim=1)


@pytest.mark.parametrize("rtol", [1e-5, 1e-8])
def test_dense_output_matches_the_closed_form_to_the_tolerance(rtol):
    times = torch.linspace(0, 1, 41, dtype=torch.float64)
    states, status, _ = solve_rows(oscillators, start(), times, rtol, rtol * 1e-2)
    exact = torch.cos(FREQUENCIES[None] * times[:, None])
    error = (states[..., 0] - exact).abs()
    assert bool((status == CONVERGED).all())
    assert float(error.max()) < 50 * rtol  # global error of a 5th-order pair at this local tolerance
    assert torch.equal(states[0], start())


def test_interior_outputs_are_as_accurate_as_step_ends():
    """Hairer's continuous extension: interpolated times are no worse than times a step ends on."""
    w = FREQUENCIES[-1:]
    dense = torch.linspace(0, 1, 201, dtype=torch.float64)
    states, _, _ = solve_rows(oscillators, start(w), dense, 1e-6, 1e-8)
    interior = (states[1:-1, 0, 0] - torch.cos(w * dense[1:-1])).abs().max()
    end = (states[-1, 0, 0] - torch.cos(w)).abs().max()
    assert float(interior) < 3 * float(end) + 1e-9


def test_each_row_is_solved_as_if_it_were_alone():
    times = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    batch, _, nfe = solve_rows(oscillators, start(), times, 1e-7, 1e-9)
    for i in range(len(FREQUENCIES)):
        alone, _, nfe_alone = solve_rows(oscillators, start()[i:i + 1], times, 1e-7, 1e-9)
        assert torch.equal(alone[:, 0], batch[:, i]) and int(nfe_alone) == int(nfe[i])
    assert nfe[-1] > 3 * nfe[0]  # the fast oscillator takes many more steps than the slow one


def test_agrees_with_torchdiffeq_dopri5_on_one_row():
    """The same method as torchdiffeq's dopri5 for one row: accuracy and cost of the same order."""
    w = FREQUENCIES[2:3]
    times = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ours, _, nfe = solve_rows(oscillators, start(w), times, 1e-8, 1e-10)
    calls = []
    ref = odeint(lambda t, y: calls.append(1) or oscillators(y), start(w), times, method="dopri5", rtol=1e-8, atol=1e-10)
    exact = torch.cos(w)
    assert abs(float(ours[-1, 0, 0] - exact)) < 2e-7 and abs(float(ref[-1, 0, 0] - exact)) < 2e-7
    assert 0.6 < int(nfe) / len(calls) < 1.4


def test_budgets_and_collapse_flag_single_rows():
    times = torch.tensor([0.0, 1.0], dtype=torch.float64)
    _, _, nfe = solve_rows(oscillators, start(), times, 1e-8, 1e-10)
    budget = int(nfe[1])
    states, status, used = solve_rows(oscillators, start(), times, 1e-8, 1e-10, max_nfe=budget)
    assert status.tolist() == [CONVERGED, CONVERGED, OVER_NFE, OVER_NFE]
    assert bool((used <= budget).all()) and torch.isnan(states[-1, 2:]).all()
    _, timed, _ = solve_rows(oscillators, start(), times, 1e-8, 1e-10, max_seconds=0.0)
    assert bool((timed == OVER_TIME).all())

    def blows_up(y):  # x' = c x^2 from x = 1: x = 1 / (1 - c t), infinite at t = 1/c (second row: t = 0.5)
        return torch.stack([y[:, 0].square() * y[:, 1], torch.zeros_like(y[:, 1])], dim=1)

    y0 = torch.tensor([[1.0, 0.5], [1.0, 2.0]], dtype=torch.float64)
    finished = []
    states, status, _ = solve_rows(blows_up, y0, times, 1e-8, 1e-10, on_finish=finished.append)
    assert status.tolist() == [CONVERGED, COLLAPSED]
    assert abs(float(states[-1, 0, 0]) - 2.0) < 1e-6  # c = 1/2: x(1) = 1 / (1 - 1/2)
    collapsed = [f for f in finished if int(f.status[0]) == COLLAPSED][0]
    assert abs(float(collapsed.times_reached[0]) - 0.5) < 1e-3 and torch.isnan(states[:, 1]).all()
