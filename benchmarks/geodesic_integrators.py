"""Which embedded pair solves chapter 8's geodesics cheapest at equal accuracy (issue #24, item 3).

Problem: chapter 8's memorising 1D flow (the profile's sizes, trained as the chapter trains it), its
exact Laplace approximation with the book's eigenvalue floor, and ``--curves`` initial velocities
v ~ N(0, H_+^{-1}) (eta = 1, as in the chapter). Every pair of :mod:`support.core.dormand_prince`
(dopri5, tsit5, dopri8) solves them as one batch at every ``--rtols`` (atol = rtol / 100, the book's
ratio), through :func:`support.core.geodesics.solve_geodesics` exactly as the chapter calls it.
Accuracy: the largest endpoint error ||alpha(1) - referee|| / ||referee - theta*|| over the first
``--referee`` curves, against scipy's DOP853 at rtol 1e-12 / atol 1e-14.

The summary compares each pair with the book's setting (dopri5 at rtol 1e-7): the cheapest setting
of the pair whose error is at most the book's, its evaluations per curve and its time, as ratios
measured in this one run. Writes _build/benchmarks/geodesic_integrators-<profile>.json.

Usage: python benchmarks/geodesic_integrators.py [--profile smoke|paper] [--curves 16] [--referee 4]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from geodesics import scipy_endpoint  # the sibling benchmark script (run from benchmarks/ as a script)

from support.core.dormand_prince import PAIRS
from support.core.geodesics import solve_geodesics
from support.experiments.memorising_flow import flow_laplace
from support.experiments.toy_1d import fit_memorising_flow_1d
from support.infra.profiles import get_profile
from support.infra.provenance import REPO_ROOT
from support.infra.reproducibility import start_run

BOOK_RTOL = 1e-7


def referee(loss, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """alpha(1) by scipy DOP853 at rtol 1e-12 / atol 1e-14, one curve."""
    return scipy_endpoint(loss, theta, v, "DOP853", 1e-12, 1e-14)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke", choices=["smoke", "paper"])
    parser.add_argument("--curves", type=int, default=16)
    parser.add_argument("--referee", type=int, default=4, help="curves checked against DOP853 at rtol 1e-12")
    parser.add_argument("--rtols", type=float, nargs="+", default=[1e-5, 1e-6, 1e-7, 1e-8, 1e-9])
    args = parser.parse_args()
    profile = get_profile(args.profile)
    if profile.device.type != "cpu":
        raise SystemExit("this benchmark runs on the CPU (its referee is scipy)")
    generator = start_run(profile)
    laplace = flow_laplace(fit_memorising_flow_1d(profile, generator, progress=False))
    theta, loss = laplace.theta_star, laplace.loss
    v = laplace.posterior.sample(args.curves, generator)
    start = time.perf_counter()
    truth = torch.stack([referee(loss, theta, row) for row in v[:args.referee]])
    print(f"{profile.describe()}; K = {theta.numel()}, {args.curves} curves; referee {time.perf_counter() - start:.0f} s")

    rows = []
    for name in PAIRS:
        for rtol in args.rtols:
            start = time.perf_counter()
            solution = solve_geodesics(loss, theta, v, method=name, rtol=rtol, atol=rtol * 1e-2)
            seconds = time.perf_counter() - start
            got = solution.endpoint[:args.referee]
            error = float(((got - truth).norm(dim=1) / (truth - theta).norm(dim=1)).max())
            rows.append(dict(pair=name, rtol=rtol, nfe=float(solution.nfe.double().mean()),
                             seconds_per_curve=seconds / args.curves, error=error))
            print(f"| {name} | {rtol:.0e} | {rows[-1]['nfe']:.0f} | {rows[-1]['seconds_per_curve']:.3f} | {error:.1e} |",
                  flush=True)

    book = next(r for r in rows if r["pair"] == "dopri5" and r["rtol"] == BOOK_RTOL)
    summary = {}
    print(f"\nAt the book's accuracy (dopri5, rtol {BOOK_RTOL:g}: error {book['error']:.1e}, "
          f"{book['nfe']:.0f} evaluations per curve):")
    print("| pair | cheapest rtol with error <= the book's | error | evaluations per curve | "
          "evaluations / book's | time / book's |")
    print("|---|---|---|---|---|---|")
    for name in PAIRS:
        good = [r for r in rows if r["pair"] == name and r["error"] <= book["error"]]
        if not good:
            print(f"| {name} | none of {args.rtols} | | | | |")
            continue
        best = min(good, key=lambda r: r["seconds_per_curve"])
        summary[name] = dict(best, nfe_ratio=best["nfe"] / book["nfe"],
                             time_ratio=best["seconds_per_curve"] / book["seconds_per_curve"])
        print(f"| {name} | {best['rtol']:.0e} | {best['error']:.1e} | {best['nfe']:.0f} | "
              f"{summary[name]['nfe_ratio']:.2f} | {summary[name]['time_ratio']:.2f} |")
    out = REPO_ROOT / "_build" / "benchmarks" / f"geodesic_integrators-{profile.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"profile": profile.describe(), "K": theta.numel(), "curves": args.curves,
                               "referee_curves": args.referee, "rows": rows, "at_book_accuracy": summary},
                              indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
