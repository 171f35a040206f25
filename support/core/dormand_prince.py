"""Embedded Runge-Kutta pairs with one step size per row and an active set: the adaptive solver of eq (19).

App. D.3.1 of the paper needs an adaptive solver ("only valid results" with Dormand-Prince). A
batched solve of S geodesics through one ``torchdiffeq.odeint`` call shares one step size and one
accept/reject decision, so every curve takes the hardest curve's steps and finished curves keep
being evaluated. Here every row of the state ``y [S, D]`` has its own step size, error estimate and
accept/reject decision, and a row leaves the batch when it reaches the final time, exceeds its
evaluation budget or its steps collapse (non-finite values ahead), so the vector field is evaluated
on the active rows only and a batch costs the sum of its rows' steps.

Three pairs (:data:`PAIRS`), all FSAL; one row alone is the textbook method (Hairer, Norsett &
Wanner, *Solving ODEs I*, II.4-5):

* ``dopri5``: Dormand & Prince (1980), 5(4), 6 evaluations per step, Hairer's continuous
  extension of order 4 (dense output);
* ``tsit5``: Tsitouras (2011), 5(4), 6 evaluations per step, his continuous extension of order 4;
* ``dopri8``: Prince & Dormand (1981), 8(7), 13 evaluations per step, with the coefficients of the
  pinned torchdiffeq (its ``dopri8``). Its dense output (a quartic through a midpoint) is of lower
  order than the pair, 5e-4 off at rtol 1e-5 on ``tests/test_dormand_prince.py``'s oscillators, so
  here a row's steps end at the output times instead. On the book's geodesics it reaches dopri5's
  endpoint error with fewer evaluations (``benchmarks/geodesic_integrators.py``).

Numerics common to all three:

* error of a row: RMS over its D components of ``err / (atol + rtol max(|y|, |y_new|))``, accepted
  when at most 1; new step ``h * clip(0.9 ratio^(-1/p), 0.2, 10)`` with p the pair's order (at most
  ``h`` after a rejection); the initial step by Hairer's rule from f(y0) and one probe evaluation;
* steps end exactly at the final time; with a dense output, output times in between come from the dense
  output, so requested times never shorten a step;
* a trial step with non-finite stages is rejected with the smallest factor 0.2; a row whose step
  falls below ``MIN_STEP_FRACTION`` of the interval is flagged ``collapsed`` (a divergence, or a loss
  that overflows, ahead on the curve), never silently returned.

The vector field must be autonomous (eq (19) is) and act row-wise: ``f(y [A, D]) -> [A, D]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchdiffeq._impl.dopri8 import Dopri8Solver

VectorField = Callable[[torch.Tensor], torch.Tensor]

STATUS = ("converged", "over evaluation budget", "over time budget", "collapsed step size (non-finite values ahead)")
"""Names of the status codes 0-3 of :class:`RowsFinished`."""
CONVERGED, OVER_NFE, OVER_TIME, COLLAPSED = range(4)
MIN_STEP_FRACTION = 1e-12
"""A row whose step size falls below this fraction of the time interval is flagged ``COLLAPSED``."""

# Dormand & Prince (1980): stage matrix a (rows of stages 2-6; the vector field is autonomous, so the
# nodes c are not needed), 5th-order weights b, error weights e = b - b* (the 7th entry: the FSAL stage).
_A = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)
# Hairer's dense output of DOPRI5 (dopri5.f, DOPCOR): weights of k1, k3, k4, k5, k6, k7.
_D = (-12715105075 / 11282082432, 87487479700 / 32700410799, -10690763975 / 1880347072,
      701980252875 / 199316789632, -1453857185 / 822651844, 69997945 / 29380423)
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


DenseOutput = Callable[[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor]
"""``(y, y_new, stages, h [A, 1], theta [A]) -> y(t + theta h)`` inside one accepted step."""


@dataclass(frozen=True)
class EmbeddedPair:
    """An explicit FSAL Runge-Kutta pair: s stages, a solution of order p, an embedded error estimate."""

    name: str
    order: int
    """p: the step-size exponent 1/p of the controller and of Hairer's initial step."""
    a: tuple[tuple[float, ...], ...]
    """Rows of the stage matrix for stages 2..s (stage 1 is f(y))."""
    b: tuple[float, ...]
    """The s weights of the solution; f(y_new) is the next step's first stage (FSAL)."""
    e: tuple[float, ...]
    """The s + 1 weights of the local error estimate (the last one multiplies f(y_new))."""
    dense: DenseOutput | None
    """The continuous extension; ``None``: steps end at the output times instead (an extension of lower
    order than the pair would spoil its accuracy between steps)."""

    @property
    def evaluations_per_step(self) -> int:
        """Evaluations of f per attempted step (s - 1 stages and f(y_new))."""
        return len(self.b)


@dataclass(frozen=True)
class RowsFinished:
    """Rows that left the active set in one step of :func:`solve_rows`."""

    rows: torch.Tensor
    """[R] indices into the batch."""
    status: torch.Tensor
    """[R] codes into :data:`STATUS`."""
    nfe: torch.Tensor
    """[R] evaluations of f spent on each row."""
    states: torch.Tensor
    """[T, R, D] the solution at the output times (NaN for rows that did not converge)."""
    times_reached: torch.Tensor
    """[R] the time each row had reached (the final time for converged rows)."""


def _weighted(ks: list[torch.Tensor], weights: tuple[float, ...]) -> torch.Tensor:
    total = torch.zeros_like(ks[0])
    for weight, k in zip(weights, ks):
        if weight:
            total = total + weight * k
    return total


def _error_ratio(y: torch.Tensor, y_new: torch.Tensor, error: torch.Tensor, rtol: float, atol: float) -> torch.Tensor:
    scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
    return (error / scale).square().mean(dim=1).sqrt()


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.square().mean(dim=1).sqrt()


def _initial_step(f: VectorField, y0: torch.Tensor, f0: torch.Tensor, rtol: float, atol: float,
                  span: float, order: int) -> torch.Tensor:
    """Hairer's starting step per row (II.4, 'Automatic step size control'), from f0 and one probe."""
    scale = atol + rtol * y0.abs()
    d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    f1 = f(y0 + h0[:, None] * f0)
    d2 = _rms((f1 - f0) / scale) / h0
    tiny = (d1 <= 1e-15) & (d2 <= 1e-15)
    h1 = torch.where(tiny, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / torch.maximum(d1, d2)) ** (1 / order))
    h = torch.minimum(100 * h0, h1)
    return torch.where(torch.isfinite(h), h, torch.full_like(h, span)).clamp(max=span)


def _dopri5_dense(y: torch.Tensor, y_new: torch.Tensor, k: list[torch.Tensor], h: torch.Tensor,
                  theta: torch.Tensor) -> torch.Tensor:
    """Hairer's 4th-order continuous extension of DOPRI5 at fractions ``theta`` [A] of each row's step."""
    diff = y_new - y
    b_spline = h * k[0] - diff
    fourth = diff - h * k[6] - b_spline
    fifth = h * _weighted([k[0], k[2], k[3], k[4], k[5], k[6]], _D)
    th = theta[:, None]
    return y + th * (diff + (1 - th) * (b_spline + th * (fourth + (1 - th) * fifth)))


# Tsitouras (2011), "Runge-Kutta pairs of order 5(4) satisfying only the first column simplifying
# assumption", Table 1, with the sign of the last error weight corrected (OrdinaryDiffEq.jl issue 1654).
_TSIT5_A = (
    (0.161,),
    (-0.008480655492356989, 0.335480655492357),
    (2.8971530571054935, -6.359448489975075, 4.3622954328695815),
    (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
    (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.02826905039406838),
)
_TSIT5_B = (0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081, 2.324710524099774)
_TSIT5_E = (0.00178001105222577714, 0.0008164344596567469, -0.007880878010261995, 0.1447110071732629,
            -0.5823571654525552, 0.45808210592918697, -1 / 66)


def _tsit5_dense(y: torch.Tensor, y_new: torch.Tensor, k: list[torch.Tensor], h: torch.Tensor,
                 theta: torch.Tensor) -> torch.Tensor:
    """Tsitouras' 4th-order continuous extension, y + h sum_i b_i(theta) k_i (his section 4), at ``theta`` [A]."""
    t = theta[:, None]
    weights = (
        -1.0530884977290216 * t * (t - 1.3299890189751412) * (t.square() - 1.4364028541716351 * t + 0.7139816917074209),
        0.1017 * t.square() * (t.square() - 2.1966568338249754 * t + 1.2949852507374631),
        2.490627285651252793 * t.square() * (t.square() - 2.38535645472061657 * t + 1.57803468208092486),
        -16.54810288924490272 * (t - 1.21712927295533244) * (t - 0.61620406037800089) * t.square(),
        47.37952196281928122 * (t - 1.203071208372362603) * (t - 0.658047292653547382) * t.square(),
        -34.87065786149660974 * (t - 1.2) * (t - 2 / 3) * t.square(),
        2.5 * (t - 1) * (t - 0.6) * t.square(),
    )
    return y + h * sum(weight * stage for weight, stage in zip(weights, k))


DOPRI5 = EmbeddedPair("dopri5", 5, _A, _B, _E, _dopri5_dense)
TSIT5 = EmbeddedPair("tsit5", 5, _TSIT5_A, _TSIT5_B, _TSIT5_E, _tsit5_dense)
_DOPRI8 = Dopri8Solver.tableau
DOPRI8 = EmbeddedPair("dopri8", 8, tuple(tuple(row.tolist()) for row in _DOPRI8.beta[:-1]),
                      tuple(_DOPRI8.c_sol[:-1].tolist()), tuple(_DOPRI8.c_error.tolist()), None)
PAIRS = {pair.name: pair for pair in (DOPRI5, TSIT5, DOPRI8)}
"""The pairs :func:`solve_rows` offers, by name."""


def solve_rows(
    f: VectorField,
    y0: torch.Tensor,
    times: torch.Tensor,
    rtol: float,
    atol: float,
    max_nfe: int | None = None,
    max_seconds: float | None = None,
    on_finish: Callable[[RowsFinished], None] | None = None,
    pair: EmbeddedPair = DOPRI5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integrate y' = f(y) from ``y0`` [S, D] at ``times[0] = 0`` to ``times[-1]``, row by row, with ``pair``.

    ``max_nfe`` bounds each row's own evaluations (deterministic); ``max_seconds`` the wall time of
    the whole call (rows still running then are flagged). ``on_finish`` is called whenever rows leave
    the active set (for progress bars and checkpoints). Returns ``(states [T, S, D], status [S],
    nfe [S])``; states of rows that did not converge are NaN. Inputs are validated by the caller
    (:func:`support.core.geodesics.solve_geodesics`).
    """
    start = time.perf_counter()
    n_rows, _ = y0.shape
    t_end = float(times[-1])
    states = torch.full((len(times), *y0.shape), float("nan"), dtype=y0.dtype, device=y0.device)
    states[0] = y0
    status = torch.full((n_rows,), -1, dtype=torch.long)
    nfe = torch.zeros(n_rows, dtype=torch.long)

    active = torch.arange(n_rows, device=y0.device)
    y = y0.clone()
    t = torch.zeros(n_rows, dtype=y0.dtype, device=y0.device)
    next_output = torch.ones(n_rows, dtype=torch.long, device=y0.device)
    k1 = f(y)
    h = _initial_step(f, y, k1, rtol, atol, t_end, pair.order)
    nfe += 2

    def finish(mask: torch.Tensor, code: torch.Tensor | int) -> None:
        nonlocal active, y, t, next_output, k1, h
        if not bool(mask.any()):
            return
        rows = active[mask]
        codes = torch.as_tensor(code, device=y.device).expand(len(rows)) if not torch.is_tensor(code) else code[mask]
        status[rows.cpu()] = codes.cpu()
        failed = rows[codes != CONVERGED]
        states[:, failed] = float("nan")
        if on_finish is not None:
            on_finish(RowsFinished(rows.cpu(), codes.cpu(), nfe[rows.cpu()].clone(), states[:, rows], t[mask].clone()))
        keep = ~mask
        active, y, t, next_output, k1, h = active[keep], y[keep], t[keep], next_output[keep], k1[keep], h[keep]

    finish(~torch.isfinite(k1).all(dim=1), COLLAPSED)
    while len(active):
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            finish(torch.ones(len(active), dtype=torch.bool, device=y.device), OVER_TIME)
            break
        if max_nfe is not None:
            finish((nfe[active.cpu()] + pair.evaluations_per_step > max_nfe).to(y.device), OVER_NFE)
            if not len(active):
                break
        # a row's step ends at the final time, or without dense output at its next output time
        target = torch.full_like(t, t_end) if pair.dense is not None else times[next_output.clamp(max=len(times) - 1)]
        step = torch.minimum(h, target - t)
        ks = [k1]
        for row in pair.a:
            ks.append(f(y + step[:, None] * _weighted(ks, row)))
        y_new = y + step[:, None] * _weighted(ks, pair.b)
        ks.append(f(y_new))
        nfe[active.cpu()] += pair.evaluations_per_step
        ratio = _error_ratio(y, y_new, step[:, None] * _weighted(ks, pair.e), rtol, atol)
        finite = torch.isfinite(ratio) & torch.isfinite(y_new).all(dim=1) & torch.isfinite(ks[-1]).all(dim=1)
        accept = finite & (ratio <= 1)
        factor = torch.where(ratio == 0, torch.full_like(ratio, _MAX_FACTOR), _SAFETY * ratio ** (-1 / pair.order))
        factor = factor.clamp(_MIN_FACTOR, _MAX_FACTOR)
        factor = torch.where(accept, factor, torch.where(finite, factor.clamp(max=1.0), torch.full_like(factor, _MIN_FACTOR)))

        truncated = step >= target - t
        t_new = torch.where(truncated, target, t + step)
        for _ in range(len(times)):  # dense output for every requested time inside an accepted step
            inside = accept & (next_output < len(times))
            inside &= times[next_output.clamp(max=len(times) - 1)] <= t_new
            if not bool(inside.any()):
                break
            at = times[next_output[inside]]
            theta = ((at - t[inside]) / step[inside]).clamp(0, 1)
            ends = at == t_new[inside]
            value = (y_new[inside].clone() if pair.dense is None else
                     pair.dense(y[inside], y_new[inside], [k[inside] for k in ks], step[inside, None], theta))
            value[ends] = y_new[inside][ends]
            states[next_output[inside], active[inside]] = value
            next_output = next_output + inside.long()

        y = torch.where(accept[:, None], y_new, y)
        t = torch.where(accept, t_new, t)
        k1 = torch.where(accept[:, None], ks[-1], k1)
        h = torch.where(accept & truncated, torch.maximum(step * factor, h), step * factor)  # a shortened step
        finish(accept & (t >= t_end), CONVERGED)
        finish(h < MIN_STEP_FRACTION * t_end, COLLAPSED)
    return states, status, nfe
