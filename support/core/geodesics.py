"""Geodesics of the loss manifold: the exponential map of Algorithm 1, Step 3 (eq 14-15, 19).

A Riemannian Laplace sample is theta_R = alpha(1), where alpha solves eq (19) from alpha(0) =
theta*, alpha'(0) = v. We integrate the first-order system y = (alpha, alpha') with torchdiffeq.

Design decisions (see the geometry chapters):

* **One batched solve for S curves.** ``vmap`` cannot wrap ``odeint`` (the solver writes in
  place), so the *vector field* is vmapped and a state of shape [S, 2K] goes through one solve.
* **Per-sample accuracy.** An adaptive solver on a batched state shares one step size and one
  error norm. With torchdiffeq's default RMS norm over the whole batch, one badly resolved curve
  is averaged with S - 1 easy ones and can be under-resolved. We pass a norm that takes the RMS
  error *per curve* and then the maximum over curves, so every curve meets ``rtol``/``atol``.
* **Stopping criterion (App. D.3.1).** ``max_nfe`` (right-hand-side evaluations, deterministic)
  and/or ``max_seconds`` bound a solve. A batch that exceeds its budget is split in halves and
  re-solved, down to single curves, so a curve is flagged unconverged exactly when it alone
  exceeds the budget, and its batch-mates are still returned. Flagged curves are reported in
  ``GeodesicSolution.converged``; :func:`exp_map` raises instead of returning them.
* **Long runs** show a progress bar (``progress=True``) and, with ``checkpoint=path``, save the
  solved curves atomically every ``CHECKPOINT_EVERY_SECONDS`` and at the end; a rerun with the
  same inputs resumes from the file (a fingerprint of theta, v, times and the solver options
  guards against reusing it for other inputs: a stale file is overwritten, with a warning).
* **Fixed-step methods** ``euler`` and ``rk4`` (torchdiffeq's ``rk4`` is the 3/8 rule) are
  available for the sensitivity comparison of App. D.3.1.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torchdiffeq import odeint
from tqdm import tqdm

from ..infra.results import atomic_torch_save, load_checkpoint
from .monge_metric import HvpMode, Loss, geodesic_acceleration

Method = Literal["dopri5", "euler", "rk4"]
CHECKPOINT_EVERY_SECONDS = 60.0


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
    converged: torch.Tensor
    """[S] bool: the curve was solved within the budget."""
    nfe: torch.Tensor
    """[S] right-hand-side evaluations of the (batched) solve that produced each curve."""

    @property
    def endpoint(self) -> torch.Tensor:
        """alpha(times[-1]) of shape [S, K] (NaN rows for unconverged curves)."""
        return self.position[-1]


def _per_curve_max_rms(n_curves: int):
    def norm(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(n_curves, -1).square().mean(dim=1).sqrt().max()

    return norm


def _solve_batch(
    loss: Loss, theta: torch.Tensor, v: torch.Tensor, times: torch.Tensor, method: Method, rtol: float,
    atol: float, steps: int, max_nfe: int | None, max_seconds: float | None, hvp: HvpMode, labels: torch.Tensor,
) -> tuple[torch.Tensor, int]:
    """Solve eq (19) for curves v [S, K] from theta [K]; returns the states [T, S, 2K] and the NFE."""
    n, k = v.shape
    counter = {"nfe": 0}
    start = time.perf_counter()

    def rhs(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        counter["nfe"] += 1
        if max_nfe is not None and counter["nfe"] > max_nfe:
            raise _BudgetExceeded
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            raise _BudgetExceeded
        position, velocity = state[:, :k], state[:, k:]
        out = torch.cat([velocity, geodesic_acceleration(loss, position, velocity, hvp)], dim=1)
        bad = ~torch.isfinite(out).all(dim=1)
        if bool(bad.any()):
            raise GeodesicError(
                f"non-finite geodesic acceleration at t = {float(t):.4g} for sample(s) "
                f"{labels[bad].tolist()[:10]} (initial speed(s) {v[bad].norm(dim=1).tolist()[:10]}); "
                "the loss or its derivatives overflow along the curve: reduce the scale of v"
            )
        return out

    state0 = torch.cat([theta.expand(n, k), v], dim=1)
    if method == "dopri5":
        options = {"norm": _per_curve_max_rms(n)}
        states = odeint(rhs, state0, times, method="dopri5", rtol=rtol, atol=atol, options=options)
    else:
        grid_step = float(times[-1] - times[0]) / steps
        states = odeint(rhs, state0, times, method=method, options={"step_size": grid_step})
    return states, counter["nfe"]


def _fingerprint(theta: torch.Tensor, v: torch.Tensor, times: torch.Tensor, *options: object) -> str:
    digest = hashlib.sha256()
    for tensor in (theta, v, times):
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr(options).encode())
    return digest.hexdigest()


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
    hvp: HvpMode = "forward",
    chunk_size: int | None = None,
    progress: bool = False,
    checkpoint: str | Path | None = None,
) -> GeodesicSolution:
    """Solve the geodesic equation (19) from alpha(0) = theta with alpha'(0) = v for every row of v.

    Parameters
    ----------
    loss:
        Maps a flat parameter tensor [K] to a scalar (torch operations only).
    theta:
        Start point [K] (theta* in Algorithm 1).
    v:
        Initial velocities [S, K] (or [K] for one curve).
    times:
        Increasing output times starting at 0; default ``[0, 1]``.
    method:
        ``dopri5`` (adaptive; ``rtol``/``atol``) or fixed-step ``euler`` / ``rk4`` (``steps``
        uniform steps over ``[0, times[-1]]``; the times must lie on that grid).
    max_nfe, max_seconds:
        Budget per batched solve; see the module docstring for how curves are flagged.
    hvp:
        ``forward`` (jvp of grad) or ``reverse`` (vjp of grad) Hessian-vector products.
    chunk_size:
        If set, curves are sorted by initial speed ||v|| and solved in batches of this size.
        Per-curve error control makes a batch take the steps of its hardest curve; grouping curves
        of similar speed keeps easy curves from paying for hard ones (``benchmarks/geodesics.py``).
    progress:
        Show a progress bar over curves.
    checkpoint:
        File to save solved curves to (atomically, every ``CHECKPOINT_EVERY_SECONDS`` and at the
        end) and to resume from. The fingerprint covers theta, v, times and the solver options
        but not the loss function: use a different file for a different loss.
    """
    if theta.ndim != 1:
        raise ValueError(f"theta must have shape [K], got {tuple(theta.shape)}")
    v2 = v[None] if v.ndim == 1 else v
    if v2.ndim != 2 or v2.shape[1] != theta.shape[0]:
        raise ValueError(f"v must have shape [K] or [S, K] with K = {theta.shape[0]}, got {tuple(v.shape)}")
    if not bool(torch.isfinite(theta).all()) or not bool(torch.isfinite(v2).all()):
        raise ValueError("theta and v must be finite")
    if method not in ("dopri5", "euler", "rk4"):
        raise ValueError(f"method must be 'dopri5', 'euler' or 'rk4', got {method!r}")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    if times is None:
        times = torch.tensor([0.0, 1.0])
    times = torch.as_tensor(times, dtype=theta.dtype, device=theta.device)
    if times.ndim != 1 or len(times) < 2 or times[0] != 0 or bool((times.diff() <= 0).any()):
        raise ValueError("times must be a strictly increasing 1-D tensor starting at 0")

    n, k = v2.shape
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    fingerprint = None
    if checkpoint is not None:
        fingerprint = _fingerprint(theta, v2, times, method, rtol, atol, steps, max_nfe, max_seconds, hvp, chunk_size)
    saved = load_checkpoint(checkpoint, fingerprint, "theta, v, times or solver options")
    if saved is None:
        states = torch.full((len(times), n, 2 * k), float("nan"), dtype=theta.dtype, device=theta.device)
        converged = torch.zeros(n, dtype=torch.bool)
        nfe = torch.zeros(n, dtype=torch.long)
        done = torch.zeros(n, dtype=torch.bool)
    else:
        states = saved["states"].to(theta.device)
        converged, nfe, done = saved["converged"], saved["nfe"], saved["done"]

    def save() -> None:
        if checkpoint is not None:
            payload = {"fingerprint": fingerprint, "states": states.cpu(), "converged": converged, "nfe": nfe, "done": done}
            atomic_torch_save(payload, Path(checkpoint))

    order = torch.argsort(v2.norm(dim=1).cpu(), descending=True)
    order = order[~done[order]]
    pending = list(order.split(chunk_size or n)) if len(order) else []
    bar = tqdm(total=n, initial=int(done.sum()), desc="geodesics", unit="curve", disable=not progress)
    last_save = time.perf_counter()
    while pending:
        idx = pending.pop()
        try:
            out, used = _solve_batch(
                loss, theta, v2[idx.to(v2.device)], times, method, rtol, atol, steps, max_nfe, max_seconds, hvp, idx
            )
        except _BudgetExceeded:
            if len(idx) > 1:
                half = len(idx) // 2
                pending += [idx[half:], idx[:half]]
            else:
                done[idx] = True
                bar.update(1)
            continue
        states[:, idx.to(states.device)] = out
        converged[idx] = True
        nfe[idx] = used
        done[idx] = True
        bar.update(len(idx))
        if time.perf_counter() - last_save > CHECKPOINT_EVERY_SECONDS:
            save()
            last_save = time.perf_counter()
    bar.close()
    if saved is None or len(order):
        save()
    solution = GeodesicSolution(times, states[..., :k], states[..., k:], converged, nfe)
    if v.ndim == 1:
        return GeodesicSolution(times, solution.position[:, 0], solution.velocity[:, 0], converged, nfe)
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
            f"{len(failed)} geodesic(s) did not converge within the budget: samples {failed[:20]}; "
            "raise max_nfe/max_seconds, or use solve_geodesics() to filter them (App. D.3.1)"
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
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
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
