"""Benchmark the geodesic solver (issue #24). Every ratio is measured in this one run.

Problem (the issue's, on synthetic data of the same shape): a 1-32-32-1 tanh MLP (K = 1,153) fitted
in float64 to 200 noisy points of sin(2x) on [-3, 3] (mean squared error, Adam then L-BFGS), its exact
Laplace approximation (positive part above 1e-3 of the top eigenvalue, the book's floor), v = eta *
(Laplace sample) with eta = 1: 300-460 right-hand sides per geodesic, the issue's "about 500" (its
eta = 0.01 was for another positive part; here it gives 20). Accuracy: the endpoint error against scipy's DOP853 at rtol 1e-10 / atol 1e-12
(reverse-over-reverse HVPs), on the first ``--referee`` curves, relative to the displacement
||alpha(1) - theta*||.

Right-hand side: every row of ours, the loop and scipy's per-curve row use the one chosen by --rhs:
``by-hand`` (default, what the book's flow networks use) gives the solver the loss as a
support.core.mlp_curvature.MLPRegressionLoss, so eq (19) comes from its one-pass gradient and
curvature; ``autodiff`` gives it the plain closure (a vmapped double backward). The torchdiffeq row
and the referee always use the closure: the first is what the authors' related code does, and the
second stays independent of the hand-written derivatives.

Rows:
  ours                    support.core.geodesics.solve_geodesics (a step size per curve, active set), one batch
  ours, compiled          the same with compile_rhs=True, in chunks of --chunk
  ours, dopri8            the 8th-order pair at --dopri8-rtol (atol = rtol / 100), one batch: the setting
                          benchmarks/geodesic_integrators.py finds as accurate as dopri5 at rtol 1e-7
  ours, dopri8, chunks    the same in batches of --cache-chunk curves at each of --chunked-rtols (only where S
                          is larger than a batch)
  ours, W workers         dopri5 in chunks of S / W shared among --workers forked processes (run it with
                          that many idle cores)
  torchdiffeq batched     one torchdiffeq dopri5 solve of the batched state with its default RMS norm
                          over the whole batch (what the authors' related batched code does)
  ours, mixed speeds      dopri5 and the 8th-order pair on the mixed-speed velocities below, one batch, and
                          (where S is larger than a batch) the same two in batches of --cache-chunk curves
  ours, loop              one solve_geodesics call per curve, on speeds spread 0.2x-3x (timed on
                          --loop curves, scaled to S)
  scipy RK45 per curve    scipy.integrate.solve_ivp per curve at the same rtol/atol (timed on --loop
                          curves, scaled to S)
and the cost of one right-hand side against one gradient. Rows that count evaluations also print ms per
curve-evaluation (seconds / total evaluations; with --device cuda the GPU figure of issue #24). Writes
_build/benchmarks/geodesics.json.

Usage: python benchmarks/geodesics.py [--sizes 100 1000] [--device cpu|cuda] [--chunk 2]
       python benchmarks/geodesics.py --sizes 1000 --only-mixed --workers 1   (the batch-against-loop rows only)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import nn
from torch.func import functional_call, grad, jvp, vmap
from torch.utils.benchmark import Timer
from torchdiffeq import odeint

from support.core.geodesics import solve_geodesics
from support.core.laplace import exact_laplace
from support.core.mlp_curvature import MLPRegressionLoss
from support.core.monge_metric import geodesic_acceleration, gradient_and_hvp
from support.infra.provenance import REPO_ROOT

RTOL, ATOL, ETA = 1e-7, 1e-9, 1.0


def regression_loss(device: torch.device):
    """theta* [K], L(theta) of the fitted 1-32-32-1 tanh MLP as a closure, and the same L as an MLPRegressionLoss."""
    generator = torch.Generator().manual_seed(0)
    x = torch.linspace(-3, 3, 200)[:, None]
    y = torch.sin(2 * x) + 0.1 * torch.randn(x.shape, generator=generator)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3000):
        optimiser.zero_grad()
        (net(x) - y).square().mean().backward()
        optimiser.step()
    lbfgs = torch.optim.LBFGS(net.parameters(), max_iter=2000, tolerance_grad=1e-12, tolerance_change=0,
                              line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        value = (net(x) - y).square().mean()
        value.backward()
        return value

    lbfgs.step(closure)
    net, x, y = net.to(device), x.to(device), y.to(device)
    names = [name for name, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    sizes = [p.numel() for p in net.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        params = {n: t.reshape(s) for n, t, s in zip(names, flat.split(sizes), shapes)}
        return (functional_call(net, params, (x,)) - y).square().mean()

    return theta, loss, MLPRegressionLoss.from_sequential(net, x, y)


def scipy_endpoint(loss, theta: torch.Tensor, v: torch.Tensor, method: str, rtol: float, atol: float) -> torch.Tensor:
    """alpha(1) of one curve by scipy's ``solve_ivp`` (``method`` at ``rtol``/``atol``), reverse-over-reverse HVPs."""
    k = theta.numel()

    def rhs(_, y):
        state = torch.from_numpy(y).to(theta)
        return np.concatenate([y[k:], geodesic_acceleration(loss, state[:k], state[k:], "reverse").cpu().numpy()])

    y0 = torch.cat([theta, v]).cpu().numpy()
    return torch.from_numpy(solve_ivp(rhs, (0, 1), y0, method=method, rtol=rtol, atol=atol).y[:k, -1]).to(theta)


def referee(loss, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """alpha(1) by scipy DOP853 at rtol 1e-10 / atol 1e-12."""
    return scipy_endpoint(loss, theta, v, "DOP853", 1e-10, 1e-12)


def torchdiffeq_batched(loss, theta: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, int]:
    """One dopri5 solve of the batched state [S, 2K], torchdiffeq's default norm (RMS over the whole batch)."""
    k, calls = theta.numel(), []

    def rhs(_, state):
        calls.append(1)
        return torch.cat([state[:, k:], geodesic_acceleration(loss, state[:, :k], state[:, k:], "reverse")], dim=1)

    state0 = torch.cat([theta.expand_as(v), v], dim=1)
    return odeint(rhs, state0, torch.tensor([0.0, 1.0]).to(theta), method="dopri5", rtol=RTOL, atol=ATOL)[-1, :, :k], len(calls)


def scipy_per_curve(loss, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """alpha(1) by scipy RK45 at the benchmark's tolerances (the per-sample solver of Bergamin et al.'s code)."""
    return scipy_endpoint(loss, theta, v, "RK45", RTOL, ATOL)


def endpoint_error(got: torch.Tensor, truth: torch.Tensor, theta: torch.Tensor) -> float:
    """max over curves of ||got - truth|| / ||truth - theta*||."""
    return float(((got - truth).norm(dim=1) / (truth - theta).norm(dim=1)).max())


def jet_acceleration(loss, theta: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """Eq (19) with the scalar alpha'^T H alpha' from forward-over-forward jvps instead of a full HVP (the
    alternative this benchmark measures against the double-backward pass of the book)."""
    gradient = grad(loss)(theta)
    curvature = jvp(lambda t: jvp(loss, (t,), (velocity,))[1], (theta,), (velocity,))[1]
    return -curvature / (1 + gradient.square().sum()) * gradient


def rhs_costs(loss, theta: torch.Tensor, v: torch.Tensor) -> dict[str, float]:
    rows = v[:100]
    thetas = theta.expand_as(rows).contiguous()
    env = {"grad": grad, "vmap": vmap, "loss": loss, "theta": theta, "v": rows[0], "thetas": thetas, "vs": rows,
           "acc": geodesic_acceleration, "ghvp": gradient_and_hvp, "jet": lambda th, ve: jet_acceleration(loss, th, ve)}
    def median(stmt: str) -> float:
        return Timer(stmt, globals=env).blocked_autorange(min_run_time=1.0).median
    one_grad = median("grad(loss)(theta)")
    one_rhs = median("acc(loss, theta, v, 'reverse')")
    batch_grad = median("vmap(grad(loss))(thetas)") / len(rows)
    batch_rhs = median("acc(loss, thetas, vs, 'reverse')") / len(rows)
    batch_jet = median("vmap(jet)(thetas, vs)") / len(rows)
    return {"gradient_ms": 1e3 * one_grad, "rhs_ms": 1e3 * one_rhs, "rhs_over_gradient": one_rhs / one_grad,
            "batched_gradient_ms_per_curve": 1e3 * batch_grad, "batched_rhs_ms_per_curve": 1e3 * batch_rhs,
            "batched_rhs_over_gradient": batch_rhs / batch_grad, "batched_jet_rhs_ms_per_curve": 1e3 * batch_jet}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def same_speed_rows(size: int, loss, autodiff_loss, theta, v, args) -> dict:
    """The rows on the Laplace velocities v [S, K]: ours (one batch, compiled, dopri8, chunked, workers) and the
    batched torchdiffeq solve, each against the referee on the first ``--referee`` curves."""
    n_ref = min(args.referee, size)
    truth = torch.stack([referee(autodiff_loss, theta, row) for row in v[:n_ref]])
    rows = {}
    ours, seconds = timed(lambda: solve_geodesics(loss, theta, v, rtol=RTOL, atol=ATOL))
    rows["ours"] = dict(seconds=seconds, nfe=int(ours.nfe.sum()), error=endpoint_error(ours.endpoint[:n_ref], truth, theta))
    compiled, seconds = timed(lambda: solve_geodesics(loss, theta, v, rtol=RTOL, atol=ATOL, chunk_size=args.chunk,
                                                     compile_rhs=True))
    rows["ours, compiled"] = dict(seconds=seconds, nfe=int(compiled.nfe.sum()),
                                  error=endpoint_error(compiled.endpoint[:n_ref], truth, theta))
    eighth, seconds = timed(lambda: solve_geodesics(loss, theta, v, method="dopri8", rtol=args.dopri8_rtol,
                                                   atol=args.dopri8_rtol * 1e-2))
    rows["ours, dopri8"] = dict(seconds=seconds, nfe=int(eighth.nfe.sum()), error=endpoint_error(eighth.endpoint[:n_ref], truth, theta))
    for rtol in args.chunked_rtols if size > args.cache_chunk else ():
        chunked, seconds = timed(lambda: solve_geodesics(loss, theta, v, method="dopri8", rtol=rtol, atol=rtol * 1e-2,
                                                        chunk_size=args.cache_chunk))
        rows[f"ours, dopri8 at rtol {rtol:g}, chunks of {args.cache_chunk}"] = dict(
            seconds=seconds, nfe=int(chunked.nfe.sum()), error=endpoint_error(chunked.endpoint[:n_ref], truth, theta))
    if args.workers > 1:
        shared, seconds = timed(lambda: solve_geodesics(loss, theta, v, rtol=RTOL, atol=ATOL, workers=args.workers,
                                                       chunk_size=math.ceil(size / args.workers)))
        rows[f"ours, {args.workers} workers"] = dict(seconds=seconds, nfe=int(shared.nfe.sum()),
                                                    error=endpoint_error(shared.endpoint[:n_ref], truth, theta))
    (batched, calls), seconds = timed(lambda: torchdiffeq_batched(autodiff_loss, theta, v))
    rows["torchdiffeq batched"] = dict(seconds=seconds, nfe=calls * size, error=endpoint_error(batched[:n_ref], truth, theta))
    return rows


def benchmark(size: int, loss, autodiff_loss, theta, laplace, generator, args) -> dict:
    """The rows for S = ``size``: ours, the loop and scipy's per-curve solve with ``loss``; torchdiffeq and the
    referee with ``autodiff_loss``."""
    v = ETA * laplace.sample(size, generator)
    spread = torch.exp(torch.linspace(math.log(0.2), math.log(3.0), size, dtype=v.dtype))[torch.randperm(size, generator=generator)]
    mixed = v * spread[:, None].to(v)
    truth_mixed = torch.stack([referee(autodiff_loss, theta, row) for row in mixed[:args.loop]])
    rows = {}
    if not args.only_mixed:
        rows |= same_speed_rows(size, loss, autodiff_loss, theta, v, args)
    mixed_solvers = {"ours, mixed speeds": dict(rtol=RTOL, atol=ATOL),
                     "ours, dopri8, mixed speeds": dict(method="dopri8", rtol=args.dopri8_rtol, atol=args.dopri8_rtol * 1e-2)}
    if size > args.cache_chunk:  # the same two in batches that stay in cache
        mixed_solvers |= {f"{name}, chunks of {args.cache_chunk}": dict(options, chunk_size=args.cache_chunk)
                          for name, options in list(mixed_solvers.items())}
    for name, options in mixed_solvers.items():
        solution, seconds = timed(lambda: solve_geodesics(loss, theta, mixed, **options))
        rows[name] = dict(seconds=seconds, nfe=int(solution.nfe.sum()),
                          error=endpoint_error(solution.endpoint[:args.loop], truth_mixed, theta))
    loop, seconds = timed(lambda: torch.stack([solve_geodesics(loss, theta, row, rtol=RTOL, atol=ATOL).endpoint
                                               for row in mixed[:args.loop]]))
    rows["ours, loop (mixed speeds)"] = dict(seconds=seconds * size / args.loop, nfe=None,
                                             error=endpoint_error(loop, truth_mixed, theta))
    scipy_out, seconds = timed(lambda: torch.stack([scipy_per_curve(loss, theta, row) for row in mixed[:args.loop]]))
    rows["scipy RK45 per curve (mixed speeds)"] = dict(seconds=seconds * size / args.loop, nfe=None,
                                                       error=endpoint_error(scipy_out, truth_mixed, theta))
    return rows


def print_same_speed_ratios(rows: dict, args) -> None:
    """Ours on one core against the batched torchdiffeq solve (fastest, and fastest at least as accurate), and
    the workers row against one core."""
    one_core = {name: row for name, row in rows.items() if name.startswith("ours") and "mixed" not in name
                and "workers" not in name}
    batched = rows["torchdiffeq batched"]
    fastest = min(row["seconds"] for row in one_core.values())
    print(f"fastest of ours on one core over torchdiffeq batched: {batched['seconds'] / fastest:.2f}x")
    as_accurate = [row["seconds"] for row in one_core.values() if row["error"] <= batched["error"]]
    if as_accurate:
        print(f"fastest of ours on one core at least as accurate as torchdiffeq batched, over it: "
              f"{batched['seconds'] / min(as_accurate):.2f}x")
    else:
        print("no row of ours on one core is as accurate as torchdiffeq batched")
    if args.workers > 1:
        shared = rows[f"ours, {args.workers} workers"]["seconds"]
        print(f"{args.workers} workers ({args.workers} cores) over ours on one core: {rows['ours']['seconds'] / shared:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--chunk", type=int, default=2, help="curves per compiled batch (2 measured fastest on a CPU)")
    parser.add_argument("--referee", type=int, default=8, help="curves checked against DOP853 at rtol 1e-10")
    parser.add_argument("--loop", type=int, default=8, help="curves timed one at a time (scaled to S)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rhs", choices=["by-hand", "autodiff"], default="by-hand",
                        help="eq (19)'s right-hand side for ours, the loop and scipy's per-curve row")
    parser.add_argument("--workers", type=int, default=2, help="processes of the 'workers' row (1: no such row)")
    parser.add_argument("--dopri8-rtol", type=float, default=1e-6)
    parser.add_argument("--cache-chunk", type=int, default=100,
                        help="batch size of the chunked dopri8 rows, run where S is larger (cache effects)")
    parser.add_argument("--chunked-rtols", type=float, nargs="+", default=[1e-6, 1e-8],
                        help="rtols of the chunked dopri8 rows (atol = rtol / 100): the book's, and one tight enough to "
                             "match the batched torchdiffeq solve's error at S = 1000")
    parser.add_argument("--only-mixed", action="store_true",
                        help="only the mixed-speed rows: batches (one, and chunks of --cache-chunk) against the loop and scipy")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float64)
    device = torch.device(args.device)
    theta, autodiff_loss, by_hand_loss = regression_loss(device)
    loss = by_hand_loss if args.rhs == "by-hand" else autodiff_loss
    laplace = exact_laplace(autodiff_loss, theta, min_eigenvalue=0.0)
    laplace = exact_laplace(autodiff_loss, theta, min_eigenvalue=1e-3 * float(laplace.eigenvalues[0]))
    generator = torch.Generator().manual_seed(1)
    report = {"device": str(device), "threads": args.threads, "right_hand_side": args.rhs, "K": theta.numel(), "rtol": RTOL, "atol": ATOL,
              "eta": ETA, "rhs": rhs_costs(loss, theta, ETA * laplace.sample(100, generator)), "sizes": {}}
    print(f"K = {theta.numel()}, {device}, {args.threads} thread(s); right-hand side {args.rhs}: {report['rhs']}")
    for size in args.sizes:
        rows = benchmark(size, loss, autodiff_loss, theta, laplace, generator, args)
        report["sizes"][size] = rows
        print(f"\nS = {size}")
        print("| method | s per curve | evaluations per curve | ms per curve-evaluation | max relative endpoint error "
              "| time / ours |")
        print("|---|---|---|---|---|---|")
        for name, row in rows.items():
            reference = rows["ours, mixed speeds" if "mixed" in name else "ours"]["seconds"]  # same velocities
            nfe = "-" if row["nfe"] is None else f"{row['nfe'] / size:.0f}"
            per_evaluation = "-" if row["nfe"] is None else f"{1e3 * row['seconds'] / row['nfe']:.3f}"
            print(f"| {name} | {row['seconds'] / size:.4f} | {nfe} | {per_evaluation} | {row['error']:.1e} | "
                  f"{row['seconds'] / reference:.2f}x |")
        if not args.only_mixed:
            print_same_speed_ratios(rows, args)
        loop = rows["ours, loop (mixed speeds)"]["seconds"]
        print(f"ours (dopri5, mixed speeds, one batch) over the loop of the same solver: "
              f"{loop / rows['ours, mixed speeds']['seconds']:.2f}x")
        batches = {name: row["seconds"] for name, row in rows.items() if name.startswith("ours") and "mixed" in name
                   and "loop" not in name}
        fastest_mixed = min(batches, key=batches.get)
        for name in ("ours, loop (mixed speeds)", "scipy RK45 per curve (mixed speeds)"):
            print(f"fastest of ours on the mixed speeds ({fastest_mixed}) over {name}: "
                  f"{rows[name]['seconds'] / batches[fastest_mixed]:.2f}x")
    out = REPO_ROOT / "_build" / "benchmarks" / "geodesics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
