"""Flow matching (Sec. 2.1.1): velocity network, deterministic dataset and loss, generation.

* eq (2): a generated sample is x(1) of dx/dt = u_theta(x, t), x(0) = x0 ~ p0 (the paper's
  "x'(0) = x0" is a typo for x(0) = x0);
* eq (3): L_FM(theta) = E ||u_theta(x_t, t) - (x* - x0)||^2;
* eq (4): the Gaussian optimal-transport path x_t = t x* + (1 - t) x0;
* App. C.1: a *fixed* dataset {t_i = i/N, x0_i, x*_i}, so L_FM is a deterministic function of theta;
* the closed-form minimiser of eq (3) for a finite training set (Bertrand et al., 2025);
* eq (5)-(6): DDIM's probability-flow ODE written as a flow-matching velocity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchdiffeq import odeint
from tqdm import tqdm

from ..core.mlp_curvature import MLPRegressionLoss

VelocityField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""u(x, t): x of shape [B, D], t of shape [B] -> velocity of shape [B, D]."""


class VelocityMLP(nn.Module):
    """u_theta(x, t): an MLP on the concatenation (x, t) with SiLU activations.

    Parameters
    ----------
    dim:
        Data dimension D.
    hidden:
        Hidden layer widths, e.g. ``(32, 32)``.
    """

    def __init__(self, dim: int, hidden: tuple[int, ...] = (32, 32)) -> None:
        super().__init__()
        if dim < 1 or not hidden or min(hidden) < 1:
            raise ValueError(f"need dim >= 1 and positive hidden widths, got {dim}, {hidden}")
        widths = (dim + 1, *hidden)
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(w_in, w_out), nn.SiLU()]
        layers.append(nn.Linear(widths[-1], dim))
        self.net = nn.Sequential(*layers)
        self.dim = dim

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x, t = _check_xt(x, t, self.dim)
        return self.net(torch.cat([x, t[:, None]], dim=1))


def _check_xt(x: torch.Tensor, t: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate x [B, D] and broadcast t (scalar or [B]) to [B]."""
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"x must have shape [B, {dim}], got {tuple(x.shape)}")
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or have shape [B] = [{x.shape[0]}], got {tuple(t.shape)}")
    return x, t


@dataclass(frozen=True)
class FlowMatchingDataset:
    """A fixed set of (t_i, x0_i, x*_i) triples, so that eq (3) is deterministic (App. C.1)."""

    t: torch.Tensor
    """[N] times."""
    x0: torch.Tensor
    """[N, D] base samples."""
    x1: torch.Tensor
    """[N, D] training points x* paired with x0."""

    @property
    def xt(self) -> torch.Tensor:
        """Points on the conditional path, eq (4): x_t = t x* + (1 - t) x0."""
        return conditional_path(self.x0, self.x1, self.t)

    @property
    def target(self) -> torch.Tensor:
        """Regression target of eq (3): d x_t / dt = x* - x0."""
        return self.x1 - self.x0

    def __len__(self) -> int:
        return self.t.shape[0]


def conditional_path(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Eq (4): x_t = t x* + (1 - t) x0, with x0, x1 of shape [N, D] and t of shape [N]."""
    return t[:, None] * x1 + (1 - t[:, None]) * x0


def deterministic_dataset(
    train_points: torch.Tensor, n_pairs: int, generator: torch.Generator | None = None
) -> FlowMatchingDataset:
    """The fixed dataset of App. C.1: t_i = i / N (i = 1..N), x0_i ~ N(0, I), x*_i from the training set.

    Every training point is used equally often (n_pairs // M times, remainder spread), in a
    random order drawn from ``generator``.
    """
    if train_points.ndim != 2:
        raise ValueError(f"train_points must have shape [M, D], got {tuple(train_points.shape)}")
    m, d = train_points.shape
    if n_pairs < m:
        raise ValueError(f"n_pairs = {n_pairs} must be at least the number of training points {m}")
    dtype, device = train_points.dtype, train_points.device
    idx = torch.arange(n_pairs) % m
    idx = idx[torch.randperm(n_pairs, generator=generator)]
    x0 = torch.randn(n_pairs, d, generator=generator, dtype=dtype).to(device)
    t = torch.arange(1, n_pairs + 1, dtype=dtype, device=device) / n_pairs
    return FlowMatchingDataset(t=t, x0=x0, x1=train_points[idx.to(device)])


def fixed_batches(
    train_points: torch.Tensor, batch_size: int, n_batches: int, generator: torch.Generator | None = None
) -> list[FlowMatchingDataset]:
    """Algorithm 2, line 6: B batches, each a fixed draw of data, noise and times (App. D.3).

    Batch b holds ``batch_size`` training points drawn without replacement (with replacement
    only if the training set is smaller), fresh x0 ~ N(0, I) and t ~ U[0, 1], all fixed, so that
    each batch defines its own deterministic loss manifold L^(b)(theta).
    """
    if batch_size < 1 or n_batches < 1:
        raise ValueError(f"batch_size and n_batches must be positive, got {batch_size}, {n_batches}")
    m, d = train_points.shape
    dtype, device = train_points.dtype, train_points.device
    batches = []
    for _ in range(n_batches):
        if batch_size <= m:
            idx = torch.randperm(m, generator=generator)[:batch_size]
        else:
            idx = torch.randint(0, m, (batch_size,), generator=generator)
        x0 = torch.randn(batch_size, d, generator=generator, dtype=dtype).to(device)
        t = torch.rand(batch_size, generator=generator, dtype=dtype).to(device)
        batches.append(FlowMatchingDataset(t=t, x0=x0, x1=train_points[idx.to(device)]))
    return batches


def flow_matching_loss(velocity: VelocityField, data: FlowMatchingDataset) -> torch.Tensor:
    """Eq (3) on a fixed dataset: mean over pairs of ||u(x_t, t) - (x* - x0)||^2 (summed over D)."""
    residual = velocity(data.xt, data.t) - data.target
    return residual.square().sum(dim=1).mean()


def flow_matching_regression(model: VelocityMLP, data: FlowMatchingDataset) -> MLPRegressionLoss:
    """Eq (3) of ``model`` on ``data`` as a function of its flat parameters: an MLP regression of
    (x_t, t) onto x* - x0, which also gives eq (19)'s gradient and curvature by hand
    (:class:`support.core.mlp_curvature.MLPRegressionLoss`). Its value and its autodiff derivatives
    are those of :func:`flow_matching_loss` through ``model`` (the same operations in the same order)."""
    return MLPRegressionLoss.from_sequential(model.net, torch.cat([data.xt, data.t[:, None]], dim=1), data.target)


def train_velocity_field(
    model: nn.Module,
    data: FlowMatchingDataset,
    steps: int,
    learning_rate: float,
    progress: bool = True,
) -> torch.Tensor:
    """Full-batch Adam with cosine learning-rate decay on eq (3); returns the loss per step.

    Full batch because the dataset is fixed: the trained weights are then a (local) minimiser of
    a deterministic loss, which is what the Laplace approximation of Sec. 2.2 is taken at.
    """
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps, eta_min=learning_rate * 1e-3)
    history = torch.empty(steps)
    bar = tqdm(range(steps), desc="flow matching", disable=not progress, mininterval=1.0)
    for step in bar:
        optimiser.zero_grad(set_to_none=True)
        loss = flow_matching_loss(model, data)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"flow-matching loss became {loss.item()} at step {step}")
        loss.backward()
        optimiser.step()
        schedule.step()
        history[step] = loss.detach()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4g}")
    return history


def generate(
    velocity: VelocityField,
    x0: torch.Tensor,
    method: str = "euler",
    steps: int = 100,
    times: torch.Tensor | None = None,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    t_end: float = 1.0,
) -> torch.Tensor:
    """Solve eq (2) for a batch x0 of shape [B, D] with torchdiffeq; one batched solve.

    Parameters
    ----------
    method:
        ``"euler"`` (``steps`` uniform steps, the paper's default sampler) or ``"dopri5"``
        (adaptive Dormand-Prince with ``rtol``/``atol``).
    times:
        Optional increasing times in [0, t_end] starting at 0; then the trajectory [T, B, D]
        is returned instead of the endpoint [B, D]. For Euler the output times must lie on the
        step grid, so they are used as the grid itself when given.
    t_end:
        Final time (use ``1 - 1/steps``-like values only for fields singular at t = 1).
    """
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape [B, D], got {tuple(x0.shape)}")
    if method not in ("euler", "dopri5"):
        raise ValueError(f"method must be 'euler' or 'dopri5', got {method!r}")

    def rhs(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return velocity(x, t.expand(x.shape[0]))

    if times is None:
        grid = torch.linspace(0.0, t_end, steps + 1 if method == "euler" else 2, dtype=x0.dtype, device=x0.device)
    else:
        grid = torch.as_tensor(times, dtype=x0.dtype, device=x0.device)
        if grid.ndim != 1 or grid[0] != 0 or bool((grid.diff() <= 0).any()):
            raise ValueError("times must be a strictly increasing 1-D tensor starting at 0")
    kwargs = {"rtol": rtol, "atol": atol} if method == "dopri5" else {}
    with torch.no_grad():
        path = odeint(rhs, x0, grid, method=method, **kwargs)
    if not bool(torch.isfinite(path).all()):
        bad = (~torch.isfinite(path)).any(dim=0).any(dim=-1).nonzero().flatten()
        raise FloatingPointError(f"generation produced non-finite values for samples {bad[:10].tolist()}")
    return path if times is not None else path[-1]


def closed_form_velocity(x: torch.Tensor, t: torch.Tensor, train_points: torch.Tensor) -> torch.Tensor:
    """The minimiser of eq (3) for a finite training set {y_i} (Bertrand et al., 2025).

    u*(x, t) = sum_i lambda_i(x, t) (y_i - x) / (1 - t),
    lambda(x, t) = softmax_i( -||x - t y_i||^2 / (2 (1 - t)^2) ).

    Its flow maps every x0 onto a training point: it memorises perfectly. Defined for t in [0, 1).
    """
    x, t = _check_xt(x, t, train_points.shape[1])
    y = train_points.to(x)
    return (_posterior_weights(x, t, y) @ y - x) / (1 - t)[:, None]


def _posterior_weights(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """lambda_i(x, t) = P(x* = y_i | x_t = x) = softmax_i(-||x - t y_i||^2 / (2 (1 - t)^2)), [B, M]."""
    if bool((t >= 1).any()) or bool((t < 0).any()):
        raise ValueError("the path marginal and its closed-form field are defined for t in [0, 1) only")
    sq = (x[:, None, :] - t[:, None, None] * y[None, :, :]).square().sum(-1)
    return torch.softmax(-sq / (2 * (1 - t)[:, None].square()), dim=1)


def empirical_score(x: torch.Tensor, t: torch.Tensor, train_points: torch.Tensor) -> torch.Tensor:
    """Score grad_x log p_t(x) of the path marginal p_t = (1/M) sum_i N(t y_i, (1 - t)^2 I).

    This is the exact score of the Gaussian-smoothed training set along eq (4), t in [0, 1).
    """
    x, t = _check_xt(x, t, train_points.shape[1])
    y = train_points.to(x)
    return (t[:, None] * (_posterior_weights(x, t, y) @ y) - x) / (1 - t)[:, None].square()


def velocity_from_score(x: torch.Tensor, t: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """Eq (6) for the linear path (4): u(x, t) = f x - (1/2) g^2 s, written in flow time t.

    For x_t = alpha_t x* + sigma_t x0 with alpha_t = t, sigma_t = 1 - t, Tweedie's formula gives
    u(x, t) = x / t + (1 - t) / t * grad log p_t(x). In diffusion time tau = 1 - t this is eq (5)
    with f(tau) = -1 / (1 - tau) and g(tau)^2 = 2 tau / (1 - tau). Defined for t in (0, 1).
    """
    if x.ndim != 2:
        raise ValueError(f"x must have shape [B, D], got {tuple(x.shape)}")
    x, t = _check_xt(x, t, x.shape[1])
    if score.shape != x.shape:
        raise ValueError(f"score must have the shape of x {tuple(x.shape)}, got {tuple(score.shape)}")
    if bool((t <= 0).any()) or bool((t >= 1).any()):
        raise ValueError("velocity_from_score needs t in (0, 1)")
    return x / t[:, None] + ((1 - t) / t)[:, None] * score


def sample_path_marginal(
    train_points: torch.Tensor, t: float, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """n draws of x_t = t x* + (1 - t) x0 with x* uniform on the training set and x0 ~ N(0, I) (eq 4)."""
    if not 0 <= t <= 1:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    m, d = train_points.shape
    idx = torch.randint(0, m, (n,), generator=generator)
    x0 = torch.randn(n, d, generator=generator, dtype=train_points.dtype).to(train_points.device)
    return t * train_points[idx.to(train_points.device)] + (1 - t) * x0


def relative_field_error(
    velocity: VelocityField,
    reference: VelocityField,
    train_points: torch.Tensor,
    t: float,
    n: int = 4096,
    generator: torch.Generator | None = None,
) -> float:
    """sqrt(E ||u - u_ref||^2 / E ||u_ref||^2) with x drawn from the path marginal p_t at time t.

    Errors are weighted where the flow actually carries mass, not on an arbitrary grid.
    """
    x = sample_path_marginal(train_points, t, n, generator)
    tt = torch.full((n,), t, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        ref = reference(x, tt)
        err = (velocity(x, tt) - ref).square().sum(1).mean() / ref.square().sum(1).mean()
    return err.sqrt().item()
