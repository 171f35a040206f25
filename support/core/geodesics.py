"""Geodesics of the loss manifold: the exponential map of Algorithm 1, Step 3 (eq 14-15, 19).

A Riemannian Laplace sample is theta_R = alpha(1), where alpha solves eq (19) from alpha(0) =
theta*, alpha'(0) = v. We integrate the first-order system y = (alpha, alpha').

Design decisions (see the geometry chapters):

* **One vmapped right-hand side for S curves.** Eq (19) is evaluated for all active curves in one
  ``vmap``ped gradient-plus-HVP pass (:func:`support.core.monge_metric.geodesic_acceleration`).
* **Each curve its own step size (``dopri5``, ``dopri8``).** :mod:`support.core.dormand_prince` keeps a step
  size, an error estimate (RMS over the curve's 2K components) and an accept/reject decision per
  curve, and a curve leaves the batch when it is done. A curve therefore takes exactly the steps it
  would take alone, whatever its batch-mates, and a batch costs the sum of its curves' steps: a
  shared step size (``torchdiffeq.odeint`` on a batched state) makes every curve take the hardest
  curve's steps and keeps evaluating finished ones (``benchmarks/geodesics.py`` measures both).
* **Stopping criterion (App. D.3.1).** ``max_nfe`` bounds each curve's own right-hand-side
  evaluations (deterministic); ``max_seconds`` the wall time of each batch. A curve over budget,
  or whose step size collapses because the loss or its derivatives become non-finite ahead, is
  flagged in ``GeodesicSolution.converged`` (its reason in ``status``) and its batch-mates are kept;
  :func:`exp_map` raises instead of returning flagged curves.
* **Long runs** show a progress bar (``progress=True``) and, with ``checkpoint=path``, save the
  finished curves atomically every ``CHECKPOINT_EVERY_SECONDS`` and at the end; a rerun with the
  same inputs resumes from the file, solving only the unfinished curves. A fingerprint of theta,
  v, times, the solver options and the loss (its value and gradient at theta) guards against
  reusing it for other inputs: a stale file is overwritten, with a warning.
* **Fixed-step methods** ``euler`` and ``rk4`` (torchdiffeq's ``rk4`` is the 3/8 rule) are
  available for the sensitivity comparison of App. D.3.1; output times must lie on their grid.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torchdiffeq import odeint
from tqdm import tqdm

from ..infra.results import atomic_torch_save, load_checkpoint
from ..infra.validation import require_finite, require_non_negative, require_positive_int, require_tensor
from .dormand_prince import COLLAPSED, CONVERGED, OVER_NFE, OVER_TIME, PAIRS, STATUS, RowsFinished, solve_rows
from .monge_metric import HvpMode, Loss, geodesic_acceleration, loss_gradient

Method = Literal["dopri5", "tsit5", "dopri8", "euler", "rk4"]
CHECKPOINT_EVERY_SECONDS = 60.0
_FIXED_STEP_STAGES = {"euler": 1, "rk4": 4}


class GeodesicError(RuntimeError):
    """A geodesic could not be computed (non-finite values, or an exceeded budget)."""


class _BudgetExceeded(Exception):
    pass


@dataclass(frozen=True)
class GeodesicSolution:
    """Result of :func:`solve_geodesics` for S curves.

    ``position`` and ``velocity`` have shape [T, S, K] at the requested ``times`` (T values);
    rows of curves that did not converge are NaN and flagged False in ``converged``.
    """

    times: torch.Tensor
    position: torch.Tensor
    velocity: torch.Tensor
    status: torch.Tensor
    """[S] codes into :data:`support.core.dormand_prince.STATUS` (0: converged)."""
    nfe: torch.Tensor
    """[S] right-hand-side evaluations spent on each curve."""
    reached: torch.Tensor
    """[S] the time each curve reached (``times[-1]`` for converged curves)."""

    @property
    def converged(self) -> torch.Tensor:
        """[S] bool: the curve was solved to ``times[-1]`` within the budget."""
        return self.status == CONVERGED

    @property
    def endpoint(self) -> torch.Tensor:
        """alpha(times[-1]) of shape [S, K] (NaN rows for unconverged curves)."""
        return self.position[-1]

    def failures(self, limit: int = 20) -> str:
        """The flagged curves, their reasons and where they stopped, for error messages."""
        failed = (~self.converged).nonzero().flatten().tolist()
        return "; ".join(f"sample {i}: {STATUS[int(self.status[i])]} at t = {float(self.reached[i]):.3g}"
                         for i in failed[:limit]) + ("; ..." if len(failed) > limit else "")


def _check_solver_options(rtol: float, atol: float, steps: int, max_nfe: int | None, max_seconds: float | None,
                          chunk_size: int | None, hvp: str) -> None:
    if require_non_negative("rtol", rtol) + require_non_negative("atol", atol) == 0:
        raise ValueError("rtol and atol are both 0: no step could ever be accepted; give a positive tolerance "
                         "(the default is rtol = 1e-7, atol = 1e-9)")
    require_positive_int("steps", steps)
    if max_nfe is not None:
        require_positive_int("max_nfe", max_nfe)
    if max_seconds is not None:
        require_non_negative("max_seconds", max_seconds)
    if chunk_size is not None:
        require_positive_int("chunk_size", chunk_size)
    if hvp not in ("forward", "reverse"):
        raise ValueError(f"hvp must be 'forward' or 'reverse', got {hvp!r}")


def _velocity_field(loss: Loss, k: int, hvp: HvpMode, compile_rhs: bool):
    """y = (alpha, alpha') [A, 2K] -> (alpha', alpha'') with alpha'' from eq (19), one vmapped pass.

    With ``compile_rhs`` the pass goes through ``torch.compile`` (inductor fuses the elementwise
    derivative work that dominates a small network's right-hand side: 3x faster for chapter 8's
    network on a CPU, ``benchmarks/geodesics.py``). vmap's batch size is compiled in, so the active
    rows are padded to the next power of two: at most log2(chunk) + 1 compilations per solve.
    """

    def field(state: torch.Tensor) -> torch.Tensor:
        position, velocity = state[:, :k], state[:, k:]
        return torch.cat([velocity, geodesic_acceleration(loss, position, velocity, hvp)], dim=1)

    if not compile_rhs:
        return field
    compiled = torch.compile(field)

    def padded(state: torch.Tensor) -> torch.Tensor:
        rows = len(state)
        size = 1 << (rows - 1).bit_length()
        if size > rows:
            state = torch.cat([state, state[-1:].expand(size - rows, -1)])
        return compiled(state)[:rows]

    return padded


def _solve_fixed_step(
    field, state0: torch.Tensor, times: torch.Tensor, method: Method, steps: int, max_nfe: int | None,
    max_seconds: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``steps`` uniform steps of torchdiffeq's euler / rk4; curves with non-finite values are flagged."""
    n = len(state0)
    needed = steps * _FIXED_STEP_STAGES[method]
    if max_nfe is not None and needed > max_nfe:
        return (torch.full((len(times), *state0.shape), float("nan"), dtype=state0.dtype, device=state0.device),
                torch.full((n,), OVER_NFE, dtype=torch.long), torch.zeros(n, dtype=torch.long))
    start = time.perf_counter()

    def rhs(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            raise _BudgetExceeded
        return field(state)

    try:
        states = odeint(rhs, state0, times, method=method, options={"step_size": float(times[-1]) / steps})
    except _BudgetExceeded:
        states = torch.full((len(times), *state0.shape), float("nan"), dtype=state0.dtype, device=state0.device)
        return states, torch.full((n,), OVER_TIME, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    bad = ~torch.isfinite(states).all(dim=2).all(dim=0)
    states[:, bad] = float("nan")
    status = torch.where(bad.cpu(), COLLAPSED, CONVERGED)
    return states, status, torch.full((n,), needed, dtype=torch.long)


def _fingerprint(loss: Loss, theta: torch.Tensor, v: torch.Tensor, times: torch.Tensor, *options: object) -> str:
    """SHA-256 of the inputs, the options and the loss's value and gradient at theta (a different loss
    gives a different fingerprint; evaluating it costs one gradient)."""
    digest = hashlib.sha256()
    with torch.no_grad():
        value = loss(theta).detach().reshape(1)
    for tensor in (theta, v, times, value, loss_gradient(loss, theta)):
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr(options).encode())
    return digest.hexdigest()


def _check_inputs(theta: torch.Tensor, v: torch.Tensor, times: torch.Tensor | None, method: str,
                  steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the tensors of :func:`solve_geodesics`; returns v as [S, K] and the output times."""
    require_tensor("theta", theta)
    require_tensor("v", v)
    if not theta.is_floating_point() or v.dtype != theta.dtype or v.device != theta.device:
        raise ValueError(f"theta and v must be floating-point tensors of one dtype and device; got theta "
                         f"{theta.dtype} on {theta.device}, v {v.dtype} on {v.device} (convert v with v.to(theta))")
    if theta.ndim != 1:
        raise ValueError(f"theta must have shape [K], got {tuple(theta.shape)}")
    v2 = v[None] if v.ndim == 1 else v
    if v2.ndim != 2 or v2.shape[1] != theta.shape[0]:
        raise ValueError(f"v must have shape [K] or [S, K] with K = {theta.shape[0]}, got {tuple(v.shape)}")
    if len(v2) == 0:
        raise ValueError("v has no rows: give at least one initial velocity")
    require_finite("theta", theta)
    require_finite("v", v2)
    if method not in (*PAIRS, *_FIXED_STEP_STAGES):
        raise ValueError(f"method must be one of {[*PAIRS, *_FIXED_STEP_STAGES]}, got {method!r}")
    times = torch.tensor([0.0, 1.0]) if times is None else times
    times = torch.as_tensor(times, dtype=theta.dtype, device=theta.device)
    if (times.ndim != 1 or len(times) < 2 or not bool(torch.isfinite(times).all()) or times[0] != 0
            or bool((times.diff() <= 0).any())):
        raise ValueError(f"times must be a finite, strictly increasing 1-D tensor starting at 0, got {times.tolist()}")
    if method in _FIXED_STEP_STAGES:
        grid = times / (times[-1] / steps)
        if not torch.allclose(grid, grid.round(), rtol=0, atol=1e-9):
            raise ValueError(f"{method} takes {steps} uniform steps over [0, {float(times[-1]):g}]: the output times "
                             f"{times.tolist()} must lie on that grid (choose steps so that they do)")
    return v2, times


def _solve_batch(
    field, theta: torch.Tensor, v: torch.Tensor, times: torch.Tensor, batch: torch.Tensor, method: Method,
    rtol: float, atol: float, steps: int, max_nfe: int | None, max_seconds: float | None,
    on_finish: Callable[[RowsFinished], None],
) -> None:
    """Solve the curves ``batch`` together; ``on_finish`` receives rows (indices into ``batch``) as they finish."""
    state0 = torch.cat([theta.expand(len(batch), len(theta)), v[batch.to(v.device)]], dim=1)
    if method in PAIRS:
        solve_rows(field, state0, times, rtol, atol, max_nfe, max_seconds, on_finish=on_finish, pair=PAIRS[method])
        return
    out, codes, used = _solve_fixed_step(field, state0, times, method, steps, max_nfe, max_seconds)
    reached = torch.where(codes == CONVERGED, times[-1].cpu(), torch.zeros((), dtype=times.dtype))
    on_finish(RowsFinished(torch.arange(len(batch)), codes, used, out, reached))


_FORKED_SOLVE: tuple | None = None
"""The arguments of :func:`_solve_batch` but the batch, set just before worker processes fork (a loss is a
closure and cannot be pickled; a forked worker inherits it)."""


def _solve_batch_in_worker(batch: torch.Tensor) -> tuple[torch.Tensor, list[RowsFinished]]:
    finished: list[RowsFinished] = []
    field, theta, v, times, *options = _FORKED_SOLVE
    _solve_batch(field, theta, v, times, batch, *options, on_finish=finished.append)
    return batch, finished


def _solve_pending(
    field, theta: torch.Tensor, v: torch.Tensor, times: torch.Tensor, pending: torch.Tensor, chunk: int,
    method: Method, rtol: float, atol: float, steps: int, max_nfe: int | None, max_seconds: float | None,
    record, workers: int,
) -> None:
    """Solve the curves ``pending`` in batches of ``chunk``; ``record(batch, finished)`` stores results.

    With ``workers > 1`` the batches are shared out among that many forked processes, each with the
    parent's intra-op thread count; a batch is solved the same way in any process, so the results do
    not depend on ``workers`` (tested), and the parent records (and checkpoints) every finished batch.
    """
    global _FORKED_SOLVE
    batches = list(pending.split(chunk)) if len(pending) else []
    options = (method, rtol, atol, steps, max_nfe, max_seconds)
    if workers == 1 or len(batches) < 2:
        for batch in batches:
            _solve_batch(field, theta, v, times, batch, *options, on_finish=lambda done, batch=batch: record(batch, done))
        return
    _FORKED_SOLVE = (field, theta, v, times, *options)
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(min(workers, len(batches)), initializer=torch.set_num_threads,
                          initargs=(torch.get_num_threads(),)) as pool:
            for batch, finished in pool.imap_unordered(_solve_batch_in_worker, batches):
                for done in finished:
                    record(batch, done)
    finally:
        _FORKED_SOLVE = None


def solve_geodesics(
    loss: Loss,
    theta: torch.Tensor,
    v: torch.Tensor,
    times: torch.Tensor | None = None,
    method: Method = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    steps: int = 100,
    max_nfe: int | None = None,
    max_seconds: float | None = None,
    hvp: HvpMode = "reverse",
    chunk_size: int | None = None,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    compile_rhs: bool = False,
    workers: int = 1,
) -> GeodesicSolution:
    """Solve the geodesic equation (19) from alpha(0) = theta with alpha'(0) = v for every row of v.

    Parameters
    ----------
    loss:
        Maps a flat parameter tensor [K] to a scalar (torch operations only).
    theta:
        Start point [K] (theta* in Algorithm 1).
    v:
        Initial velocities [S, K] (or [K] for one curve), of theta's dtype and device.
    times:
        Increasing output times starting at 0; default ``[0, 1]``.
    method:
        ``dopri5`` or ``dopri8`` (adaptive pairs of order 5 and 8, a step size per curve;
        ``rtol``/``atol`` per curve; :mod:`support.core.dormand_prince`) or fixed-step ``euler`` / ``rk4`` (``steps`` uniform steps over ``[0, times[-1]]``; the times must lie on
        that grid).
    max_nfe, max_seconds:
        Evaluation budget per curve, wall-time budget per batch; see the module docstring.
    hvp:
        ``reverse`` (vjp of grad, the default: on a CPU 1.5x faster than ``forward`` for chapter 8's
        network, 9.4 against 14.3 ms per curve, and faster for the U-Net, README) or ``forward``
        (jvp of grad) Hessian-vector products.
    chunk_size:
        If set, curves are solved in batches of this many (in their order), which bounds the
        memory of one vmapped right-hand side (the U-Net of chapter 12); default: one batch.
    progress:
        Show a progress bar over curves.
    checkpoint:
        File to save finished curves to (atomically, every ``CHECKPOINT_EVERY_SECONDS`` and at the
        end) and to resume from; see the module docstring.
    compile_rhs:
        ``torch.compile`` the right-hand side (pays off for long solves: each batch size compiles
        once, about 10 s on a CPU). Compiled and eager arithmetic round differently, so a profile
        fixes this choice (``Profile.toy_geodesics``).
    workers:
        Processes that share the batches of ``chunk_size`` curves (forked, CPU only). Each batch is
        solved the same way in any process, so the results do not depend on it; it is a speed
        setting only (``Profile.toy_geodesics``).
    """
    _check_solver_options(rtol, atol, steps, max_nfe, max_seconds, chunk_size, hvp)
    v2, times = _check_inputs(theta, v, times, method, steps)
    require_positive_int("workers", workers)
    if workers > 1 and theta.device.type != "cpu":
        raise ValueError(f"workers = {workers} forks processes, which CUDA does not survive; on {theta.device} "
                         "use workers = 1 and a larger chunk_size instead")

    n, k = v2.shape
    fingerprint = None
    if checkpoint is not None:
        fingerprint = _fingerprint(loss, theta, v2, times, method, rtol, atol, steps, max_nfe, max_seconds, hvp,
                                   chunk_size, compile_rhs)
    saved = load_checkpoint(checkpoint, fingerprint, "loss, theta, v, times or solver options",
                            required=("states", "status", "nfe", "reached"))
    if saved is None:
        states = torch.full((len(times), n, 2 * k), float("nan"), dtype=theta.dtype, device=theta.device)
        status = torch.full((n,), -1, dtype=torch.long)
        nfe = torch.zeros(n, dtype=torch.long)
        reached = torch.zeros(n, dtype=theta.dtype)
    else:
        states = saved["states"].to(theta.device)
        status, nfe, reached = saved["status"], saved["nfe"], saved["reached"]

    def save() -> None:
        if checkpoint is not None:
            payload = {"fingerprint": fingerprint, "states": states.cpu(), "status": status, "nfe": nfe,
                       "reached": reached}
            atomic_torch_save(payload, Path(checkpoint))

    pending = (status < 0).nonzero().flatten()
    bar = tqdm(total=n, initial=n - len(pending), desc="geodesics", unit="curve", disable=not progress)
    last_save = time.perf_counter()

    def record(batch: torch.Tensor, done: RowsFinished) -> None:
        nonlocal last_save
        rows = batch[done.rows]
        states[:, rows.to(states.device)] = done.states
        status[rows], nfe[rows], reached[rows] = done.status, done.nfe, done.times_reached.cpu()
        bar.update(len(rows))
        if time.perf_counter() - last_save > CHECKPOINT_EVERY_SECONDS:
            save()
            last_save = time.perf_counter()

    field = _velocity_field(loss, k, hvp, compile_rhs)
    # every solve compiles its own field (it closes over this loss): room for many solves per process
    with torch._dynamo.config.patch(recompile_limit=256):
        _solve_pending(field, theta, v2, times, pending, chunk_size or n, method, rtol, atol, steps, max_nfe,
                       max_seconds, record, workers)
    bar.close()
    if saved is None or len(pending):
        save()
    solution = GeodesicSolution(times, states[..., :k], states[..., k:], status, nfe, reached)
    if v.ndim == 1:
        return GeodesicSolution(times, solution.position[:, 0], solution.velocity[:, 0], status, nfe, reached)
    return solution


def exp_map(
    loss: Loss,
    theta: torch.Tensor,
    v: torch.Tensor,
    times: torch.Tensor | None = None,
    **solver_options,
) -> torch.Tensor:
    """The exponential map of the loss manifold projected to parameter space: alpha(1) (eq 15, Alg. 1).

    ``v`` of shape [K] gives [K]; ``v`` of shape [S, K] gives [S, K] from one batched solve.
    With ``times``, returns the trajectory [T, K] or [T, S, K] instead. ``solver_options`` are
    those of :func:`solve_geodesics`. Raises :class:`GeodesicError` naming the samples that did
    not converge within the budget; use :func:`solve_geodesics` to keep the others (App. D.3.1).
    """
    solution = solve_geodesics(loss, theta, v, times=times, **solver_options)
    if not bool(solution.converged.all()):
        failed = (~solution.converged).nonzero().flatten().tolist()
        raise GeodesicError(
            f"{len(failed)} geodesic(s) did not converge: samples {failed[:20]} ({solution.failures()}). "
            "Over budget: raise max_nfe/max_seconds; collapsed: the loss or its derivatives are not finite "
            "ahead on the curve, reduce the scale of v. solve_geodesics() keeps the other curves (App. D.3.1)"
        )
    return solution.position if times is not None else solution.endpoint


def exp_map_along_line(
    loss: Loss, theta: torch.Tensor, direction: torch.Tensor, scales: torch.Tensor, **solver_options
) -> torch.Tensor:
    """Exp_theta(s v) for many real scales s from two geodesic solves (eq 15 with a 1-D velocity set).

    Geodesics are homogeneous: the curve with initial velocity s v is the one with initial
    velocity v run s times as fast, alpha_{s v}(t) = alpha_v(s t). So Exp(s v) = alpha_v(s) for
    s > 0 and alpha_{-v}(|s|) for s < 0, and all samples of a Laplace approximation restricted to
    one direction (App. C.2: v = z u_1 / sqrt(lambda_1), scaled by eta) lie on two geodesic rays,
    each solved once with an output at every |s|.

    ``direction`` has shape [K], ``scales`` [M]; returns [M, K]. ``solver_options`` are those of
    :func:`solve_geodesics` (without ``checkpoint``: two short solves need none). Raises
    :class:`GeodesicError` if a ray does not converge within the budget.
    """
    if direction.shape != theta.shape or theta.ndim != 1:
        raise ValueError(f"need theta and direction of shape [K]; got {tuple(theta.shape)}, {tuple(direction.shape)}")
    scales = torch.as_tensor(scales, dtype=theta.dtype, device=theta.device)
    if scales.ndim != 1 or not bool(torch.isfinite(scales).all()):
        raise ValueError(f"scales must be a finite 1-D tensor, got shape {tuple(scales.shape)}")
    if "checkpoint" in solver_options:
        raise ValueError("exp_map_along_line does not checkpoint; solve_geodesics does")
    out = theta.expand(len(scales), -1).clone()
    for sign in (1.0, -1.0):
        ray = sign * scales > 0
        if not bool(ray.any()):
            continue
        lengths, index = torch.unique(scales[ray].abs(), return_inverse=True)  # sorted ascending
        times = torch.cat([lengths.new_zeros(1), lengths])
        path = exp_map(loss, theta, sign * direction, times=times, **solver_options)
        out[ray] = path[1:][index]
    return out


def euler_curve_approximation(
    loss: Loss, theta: torch.Tensor, v: torch.Tensor, n: int, hvp: HvpMode = "forward"
) -> tuple[torch.Tensor, torch.Tensor]:
    """App. B.3, eq (25)/(34), and the correction vector kappa of eq (26).

    With eps = 1/n, Euler steps alpha(t + eps) = alpha(t) + eps alpha'(t) and
    alpha'(t + eps) = alpha'(t) + eps alpha''(t) (eq 32-33, the paper's eq (33) has a typo)
    give alpha(1) ~ theta + v + eps^2 sum_{j=0}^{n-2} (n - 1 - j) alpha''(j eps) (eq 34). Since
    alpha'' = -[alpha'^T H alpha' / (1 + ||grad L||^2)] grad L (eq 19), this is
    theta_E - eps^2 kappa with

        kappa = sum_{j=0}^{n-2} (n - 1 - j) [alpha'^T H alpha' / (1 + ||grad L||^2)] grad L  at alpha(j eps).

    Returns ``(alpha_1, kappa)`` for v of shape [K] or [S, K] (batched, one pass per step).
    """
    require_positive_int("n", n)
    if theta.ndim != 1 or v.shape[-1] != theta.shape[0] or v.ndim not in (1, 2):
        raise ValueError(f"need theta [K] and v [K] or [S, K]; got {tuple(theta.shape)}, {tuple(v.shape)}")
    eps = 1.0 / n
    v2 = v[None] if v.ndim == 1 else v
    velocity, position = v2, theta.expand_as(v2)
    kappa = torch.zeros_like(velocity)
    for j in range(n - 1):
        accel = geodesic_acceleration(loss, position, velocity, hvp)  # [S, K]: one vmapped pass
        kappa = kappa - (n - 1 - j) * accel
        position = position + eps * velocity
        velocity = velocity + eps * accel
    alpha_1 = theta + v2 - eps**2 * kappa
    if v.ndim == 1:
        return alpha_1[0], kappa[0]
    return alpha_1, kappa
