"""Monge metric, Christoffel symbols, eq (19) and the geodesic solver, against independent oracles."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from support.core.christoffel import christoffel_symbols, geodesic_acceleration_from_christoffel, monge_metric_fn
from support.core.dormand_prince import COLLAPSED
from support.core.geodesics import (
    GeodesicError,
    euler_curve_approximation,
    exp_map,
    exp_map_along_line,
    solve_geodesics,
)
from support.core.monge_metric import (
    geodesic_acceleration,
    gradient_and_hvp,
    inverse_metric_vector_product,
    metric_norm,
    metric_vector_product,
    monge_metric,
)

torch.set_default_dtype(torch.float64)

A = torch.tensor([[4.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 0.3]])


def quadratic(theta):
    return 0.5 * theta @ A @ theta


def wiggly(theta):
    return 0.5 * theta @ A @ theta + 0.3 * torch.sin(2 * theta).sum() * theta[0] + 0.1 * theta.pow(4).sum()


def test_metric_products_match_dense_matrices():
    g = torch.randn(7)
    v = torch.randn(7)
    dense = monge_metric(g)
    assert torch.allclose(metric_vector_product(g, v), dense @ v)
    assert torch.allclose(inverse_metric_vector_product(g, v), torch.linalg.solve(dense, v))
    assert torch.allclose(metric_norm(g, v), (v @ dense @ v).sqrt())
    batch_g, batch_v = torch.randn(4, 7), torch.randn(4, 7)
    assert torch.allclose(
        inverse_metric_vector_product(batch_g, metric_vector_product(batch_g, batch_v)), batch_v
    )
    with pytest.raises(ValueError):
        monge_metric(torch.randn(2, 2))


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_gradient_and_hvp_match_finite_differences(mode):
    theta, v = torch.randn(3), torch.randn(3)
    g, hv = gradient_and_hvp(wiggly, theta, v, mode)
    eps = 1e-6
    fd_grad = torch.stack([(wiggly(theta + eps * e) - wiggly(theta - eps * e)) / (2 * eps) for e in torch.eye(3)])
    assert torch.allclose(g, fd_grad, atol=1e-7)
    g_plus, _ = gradient_and_hvp(wiggly, theta + eps * v, v, mode)
    g_minus, _ = gradient_and_hvp(wiggly, theta - eps * v, v, mode)
    assert torch.allclose(hv, (g_plus - g_minus) / (2 * eps), atol=1e-6)
    with pytest.raises(ValueError):
        gradient_and_hvp(wiggly, theta, v, "sideways")


def test_christoffel_symbols_of_polar_coordinates():
    """Metric diag(1, r^2): Gamma^r_phiphi = -r, Gamma^phi_rphi = Gamma^phi_phir = 1/r, others 0."""
    r = 2.5
    metric = lambda q: torch.diag(torch.stack([torch.ones_like(q[0]), q[0] ** 2]))
    gamma = christoffel_symbols(metric, torch.tensor([r, 0.7]))
    expected = torch.zeros(2, 2, 2)
    expected[0, 1, 1] = -r
    expected[1, 0, 1] = expected[1, 1, 0] = 1 / r
    assert torch.allclose(gamma, expected)
    with pytest.raises(ValueError, match=r"\[2, 2\]"):
        christoffel_symbols(lambda q: torch.eye(3), torch.tensor([1.0, 2.0]))


def test_eq19_equals_the_general_geodesic_equation():
    metric = monge_metric_fn(wiggly)
    for _ in range(5):
        theta, v = torch.randn(3), torch.randn(3)
        generic = geodesic_acceleration_from_christoffel(christoffel_symbols(metric, theta), v)
        assert torch.allclose(geodesic_acceleration(wiggly, theta, v), generic, atol=1e-12)
        assert torch.allclose(geodesic_acceleration(wiggly, theta, v, mode="reverse"), generic, atol=1e-12)


def test_batched_acceleration_equals_per_sample_and_checks_shapes():
    theta, v = torch.randn(6, 3), torch.randn(6, 3)
    batched = geodesic_acceleration(wiggly, theta, v)
    assert torch.allclose(batched, torch.stack([geodesic_acceleration(wiggly, a, b) for a, b in zip(theta, v)]))
    with pytest.raises(ValueError, match="both have shape"):
        geodesic_acceleration(wiggly, theta, v[:, :2])


def _scipy_generic_geodesic(loss, theta, v):
    """Oracle: the general eq (14) with autodiff Christoffel symbols, solved by scipy's DOP853."""
    metric = monge_metric_fn(loss)
    k = theta.numel()

    def rhs(_, y):
        pos, vel = torch.from_numpy(y[:k]), torch.from_numpy(y[k:])
        acc = geodesic_acceleration_from_christoffel(christoffel_symbols(metric, pos), vel)
        return np.concatenate([y[k:], acc.numpy()])

    out = solve_ivp(rhs, (0, 1), np.concatenate([theta.numpy(), v.numpy()]), method="DOP853", rtol=1e-12, atol=1e-12)
    return torch.from_numpy(out.y[:k, -1])


@pytest.mark.parametrize("loss", [quadratic, wiggly])
def test_exp_map_matches_scipy_on_the_general_equation(loss):
    theta = torch.zeros(3)
    v = torch.tensor([[0.8, -0.4, 1.0], [-0.3, 0.9, 0.2]])
    batched = exp_map(loss, theta, v, rtol=1e-10, atol=1e-12)
    for row, got in zip(v, batched):
        assert torch.allclose(got, _scipy_generic_geodesic(loss, theta, row), atol=1e-7)
    single = exp_map(loss, theta, v[0], rtol=1e-10, atol=1e-12)
    assert single.shape == (3,) and torch.allclose(single, batched[0], atol=1e-8)


def test_flat_directions_are_straight_lines():
    """Where grad L = 0 along the whole line (here: a loss independent of theta_2), alpha = theta + t v."""
    loss = lambda th: th[0] ** 2
    v = torch.tensor([[0.0, 1.7]])
    assert torch.allclose(exp_map(loss, torch.zeros(2), v), v, atol=1e-12)


def test_metric_speed_is_conserved_and_theorem_4_2_holds():
    theta = torch.zeros(3)
    v = 2.0 * torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    times = torch.linspace(0, 1, 11)
    sol = solve_geodesics(wiggly, theta, v, times=times, rtol=1e-10, atol=1e-12)
    grads = torch.func.vmap(torch.func.grad(wiggly))(sol.position.reshape(-1, 3)).reshape(sol.position.shape)
    speed = metric_norm(grads, sol.velocity)  # [T, S]
    assert torch.allclose(speed, speed[0].expand_as(speed), rtol=1e-7)
    # theta* = 0 is a minimum of `wiggly` only approximately; use the quadratic for Theorem 4.2
    end = exp_map(quadratic, theta, v)
    assert bool((end.norm(dim=1) <= v.norm(dim=1) + 1e-12).all())


def test_trajectory_times_and_fixed_step_methods():
    theta, v = torch.zeros(3), torch.tensor([[1.0, 0.5, -0.5]])
    times = torch.tensor([0.0, 0.5, 1.0])
    ref = exp_map(quadratic, theta, v, times=times, rtol=1e-10, atol=1e-12)
    assert ref.shape == (3, 1, 3) and torch.equal(ref[0], v * 0)
    for method, steps, tol in [("rk4", 200, 1e-6), ("euler", 2000, 5e-3)]:
        got = exp_map(quadratic, theta, v, times=times, method=method, steps=steps)
        assert torch.allclose(got, ref, atol=tol), method
    coarse = exp_map(quadratic, theta, v, method="euler", steps=10)
    assert not torch.allclose(coarse, ref[-1], atol=1e-3)


def test_budget_flags_only_the_slow_samples():
    theta = torch.zeros(3)
    v = torch.tensor([[0.1, 0.1, 0.1], [8.0, 8.0, 8.0], [0.2, 0.0, 0.1], [0.0, 0.1, 0.0]])
    alone = [solve_geodesics(quadratic, theta, row).nfe.item() for row in v]
    budget = sorted(alone)[-2] + 1  # enough for every curve but the fast one
    sol = solve_geodesics(quadratic, theta, v, max_nfe=budget)
    assert sol.converged.tolist() == [a <= budget for a in alone] == [True, False, True, True]
    assert torch.isnan(sol.endpoint[1]).all() and torch.isfinite(sol.endpoint[[0, 2, 3]]).all()
    assert torch.allclose(sol.endpoint[[0, 2, 3]], exp_map(quadratic, theta, v[[0, 2, 3]]), atol=1e-8)
    with pytest.raises(GeodesicError, match=r"samples \[1\]"):
        exp_map(quadratic, theta, v, max_nfe=budget)
    timed = solve_geodesics(quadratic, theta, v, max_seconds=0.0)
    assert not bool(timed.converged.any())


def test_per_curve_error_control_does_not_depend_on_batch_mates():
    theta = torch.zeros(3)
    hard = torch.tensor([[3.0, -2.0, 2.5]])
    easy = 1e-3 * torch.randn(63, 3, generator=torch.Generator().manual_seed(1))
    alone = exp_map(wiggly, theta, hard, rtol=1e-6, atol=1e-8)
    in_batch = exp_map(wiggly, theta, torch.cat([hard, easy]), rtol=1e-6, atol=1e-8)[:1]
    truth = exp_map(wiggly, theta, hard, rtol=1e-11, atol=1e-13)
    assert (in_batch - truth).abs().max() <= 2 * (alone - truth).abs().max() + 1e-9


def test_a_non_finite_curve_is_flagged_and_its_batch_mates_are_kept():
    """#21 D3: a curve running into non-finite values is flagged like an over-budget one, never fatal."""
    nan = torch.tensor(float("nan"))
    loss = lambda th: th.square().sum() * torch.where(th[0] > 1, nan, 1.0)  # "overflows" beyond 1
    v = torch.tensor([[1e-3, 0.0], [5.0, 0.0], [0.0, 0.3]])
    with pytest.raises(GeodesicError, match=r"samples \[1\] \(sample 1: collapsed step size .* at t = 0\.\d+"):
        exp_map(loss, torch.zeros(2), v)
    sol = solve_geodesics(loss, torch.zeros(2), v)
    assert sol.converged.tolist() == [True, False, True] and sol.status[1] == COLLAPSED
    assert 0.15 < float(sol.reached[1]) < 1  # where it stopped: alpha_0 reaches 1 at about t = 0.2 (not exact: alpha bends)
    assert torch.isnan(sol.endpoint[1]).all()
    assert torch.allclose(sol.endpoint[[0, 2]], exp_map(loss, torch.zeros(2), v[[0, 2]]), atol=1e-12)
    with pytest.raises(ValueError, match="finite"):
        exp_map(quadratic, torch.zeros(3), torch.full((3,), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        exp_map(quadratic, torch.zeros(3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="method"):
        exp_map(quadratic, torch.zeros(3), torch.zeros(3), method="rk45")


def test_compiled_right_hand_side_gives_the_eager_geodesic():
    theta, v = torch.zeros(3), torch.tensor([[0.9, -0.3, 0.6]])
    eager = solve_geodesics(wiggly, theta, v, rtol=1e-9, atol=1e-11)
    compiled = solve_geodesics(wiggly, theta, v, rtol=1e-9, atol=1e-11, compile_rhs=True)
    assert bool(compiled.converged.all())
    assert torch.allclose(compiled.endpoint, eager.endpoint, atol=1e-10)


@pytest.mark.parametrize("options, message", [
    (dict(rtol=-1e-6), "rtol must be a finite number >= 0"),
    (dict(atol=float("nan")), "atol must be a finite number >= 0"),
    (dict(rtol=0, atol=0), "both 0"),
    (dict(max_seconds=float("nan")), "max_seconds must be a finite number"),
    (dict(max_nfe=0), "max_nfe must be a positive integer"),
    (dict(max_nfe=2.5), "max_nfe must be a positive integer"),
    (dict(steps=0, method="euler"), "steps must be a positive integer"),
    (dict(chunk_size=0), "chunk_size must be a positive integer"),
    (dict(times=torch.tensor([0.0, float("nan"), 1.0])), "finite, strictly increasing"),
    (dict(times=torch.tensor([0.0, 0.33, 1.0]), method="rk4", steps=10), "must lie on that grid"),
    (dict(hvp="central"), "hvp must be"),
])
def test_bad_solver_options_are_refused_with_their_cause(options, message):
    """#21: options that used to be accepted silently (every curve 'converged', budgets off, output times
    interpolated off the grid) or failed with a misleading message."""
    with pytest.raises(ValueError, match=message):
        solve_geodesics(quadratic, torch.zeros(3), torch.ones(2, 3), **options)


def test_acceleration_of_no_curves_is_refused():
    with pytest.raises(ValueError, match="S = 0"):
        geodesic_acceleration(quadratic, torch.zeros(0, 3), torch.zeros(0, 3))


def test_bad_start_points_and_velocities_are_refused_before_any_solve():
    theta = torch.zeros(3)
    with pytest.raises(ValueError, match=r"one dtype and device.*v.to\(theta\)"):
        solve_geodesics(quadratic, theta.float(), torch.ones(2, 3))
    with pytest.raises(ValueError, match="floating-point"):
        solve_geodesics(quadratic, torch.zeros(3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="no rows"):
        solve_geodesics(quadratic, theta, torch.ones(0, 3))
    with pytest.raises(TypeError, match="v must be a torch tensor"):
        solve_geodesics(quadratic, theta, [[1.0, 0.0, 0.0]])
    on_grid = solve_geodesics(quadratic, theta, torch.ones(1, 3), times=torch.tensor([0.0, 0.3, 1.0]),
                              method="rk4", steps=10)
    assert bool(on_grid.converged.all())


def test_appendix_b3_is_euler_on_the_first_order_system_and_kappa_reproduces_it():
    theta, v = torch.zeros(3), torch.tensor([[1.0, -0.5, 0.7], [0.2, 0.4, -0.1]])
    n = 25
    alpha_1, kappa = euler_curve_approximation(wiggly, theta, v, n)
    euler = exp_map(wiggly, theta, v, method="euler", steps=n)
    assert torch.allclose(alpha_1, euler, atol=1e-12)  # eq (34) = n explicit Euler steps
    assert torch.allclose(alpha_1, theta + v - kappa / n**2)  # eq (25)-(26)
    one, k1 = euler_curve_approximation(wiggly, theta, v[0], n)
    assert torch.allclose(one, alpha_1[0]) and torch.allclose(k1, kappa[0])
    errors = [
        (euler_curve_approximation(wiggly, theta, v, m)[0] - exp_map(wiggly, theta, v, rtol=1e-11, atol=1e-13))
        .norm()
        .item()
        for m in (40, 80, 160)
    ]
    order = math.log2(errors[0] / errors[1]), math.log2(errors[1] / errors[2])
    assert all(0.8 < p < 1.2 for p in order), order  # global error O(eps), see the chapter
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="n must be a positive integer"):
            euler_curve_approximation(wiggly, theta, v, bad)


def test_chunked_solves_return_curves_in_the_original_order():
    theta = torch.zeros(3)
    v = torch.randn(10, 3, generator=torch.Generator().manual_seed(4)) * torch.linspace(0.1, 3, 10)[:, None]
    whole = solve_geodesics(wiggly, theta, v, rtol=1e-10, atol=1e-12)
    chunked = solve_geodesics(wiggly, theta, v, rtol=1e-10, atol=1e-12, chunk_size=3)
    assert bool(chunked.converged.all())
    assert torch.allclose(whole.endpoint, chunked.endpoint, atol=1e-8)
    assert torch.equal(chunked.nfe, whole.nfe)  # each curve takes its own steps, whatever its batch-mates
    alone = torch.stack([solve_geodesics(wiggly, theta, row, rtol=1e-10, atol=1e-12).nfe[0] for row in v[:3]])
    assert torch.equal(alone, whole.nfe[:3])
    with pytest.raises(ValueError, match="chunk_size"):
        solve_geodesics(wiggly, theta, v, chunk_size=0)


def test_worker_processes_give_the_same_curves_and_checkpoint_them(tmp_path):
    """workers > 1 shares the batches among forked processes: bit-identical results, every curve recorded."""
    theta = torch.zeros(3)
    v = torch.randn(7, 3, generator=torch.Generator().manual_seed(5)) * torch.linspace(0.2, 2, 7)[:, None]
    times = torch.tensor([0.0, 0.5, 1.0])
    serial = solve_geodesics(wiggly, theta, v, times=times, chunk_size=2)
    path = tmp_path / "curves.pt"
    parallel = solve_geodesics(wiggly, theta, v, times=times, chunk_size=2, workers=3, checkpoint=path)
    assert torch.equal(parallel.position, serial.position) and torch.equal(parallel.velocity, serial.velocity)
    assert torch.equal(parallel.nfe, serial.nfe) and bool(parallel.converged.all())
    resumed = solve_geodesics(wiggly, theta, v, times=times, chunk_size=2, workers=1, checkpoint=path)
    assert torch.equal(resumed.position, serial.position)  # the worker count is not part of the fingerprint
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        solve_geodesics(wiggly, theta, v, workers=0)


@pytest.mark.parametrize("method", ["tsit5", "dopri8"])
def test_every_pair_solves_the_geodesic_to_its_tolerance(method):
    """The higher-order and the Tsitouras pair against scipy's DOP853 on the general geodesic equation,
    including output times inside the interval (dense output for tsit5, steps ending there for dopri8)."""
    theta, v = torch.zeros(3), torch.tensor([[0.8, -0.4, 1.0], [-0.3, 0.9, 0.2]])
    times = torch.tensor([0.0, 0.3, 1.0])
    path = exp_map(wiggly, theta, v, times=times, method=method, rtol=1e-9, atol=1e-11)
    for row, got in zip(v, path[-1]):
        assert torch.allclose(got, _scipy_generic_geodesic(wiggly, theta, row), atol=1e-7)
    early = exp_map(wiggly, theta, 0.3 * v, method="dopri5", rtol=1e-11, atol=1e-13)  # alpha_v(0.3) = Exp(0.3 v)
    assert torch.allclose(path[1], early, atol=1e-7)


def test_exp_map_along_line_equals_direct_solves_of_the_scaled_velocities():
    """Homogeneity alpha_{s v}(1) = alpha_v(s): two ray solves reproduce one solve per scale, any sign."""
    theta, direction = torch.zeros(3), torch.tensor([0.6, -0.2, 0.5])
    scales = torch.tensor([1.5, -0.7, 0.0, 0.3, 1.5, -2.0])  # a repeat, a zero, both signs
    got = exp_map_along_line(wiggly, theta, direction, scales, rtol=1e-10, atol=1e-12)
    nonzero = scales != 0
    direct = exp_map(wiggly, theta, scales[nonzero, None] * direction, rtol=1e-10, atol=1e-12)
    assert got.shape == (6, 3)
    assert torch.allclose(got[nonzero], direct, atol=1e-7)
    assert torch.equal(got[2], theta) and torch.equal(got[0], got[4])
    with pytest.raises(ValueError, match="shape"):
        exp_map_along_line(wiggly, theta, direction[:2], scales)
    with pytest.raises(ValueError, match="finite"):
        exp_map_along_line(wiggly, theta, direction, torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="checkpoint"):
        exp_map_along_line(wiggly, theta, direction, scales, checkpoint="x.pt")
    with pytest.raises(GeodesicError, match="did not converge"):
        exp_map_along_line(wiggly, theta, direction, scales, max_nfe=5)
