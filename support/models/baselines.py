"""Training-free generators built from the training set alone (baselines for the Laplace ensembles).

* **Closed-form flow matching.** The minimiser u* of eq (3) for a finite training set (Bertrand
  et al., 2025; :func:`support.models.flow_matching.closed_form_velocity`). With K uniform Euler steps
  the last step, from t = 1 - 1/K, returns x + (1/K) u*(x, t) = sum_i lambda_i y_i: a convex
  combination of training points with softmax weights so peaked that it *is* a training point.
  It memorises perfectly.
* **Inertial empirical diffusion** (Lyu, Qian, Nguyen and Tong, 2025). Run the same empirical
  probability-flow ODE, but stop at noise level sigma: on the path x_t = t y + (1 - t) x0 the
  rescaled point x_t / t is y + sigma eps with sigma = (1 - t) / t, so stop at t = 1 / (1 + sigma).
  Then take one inertial (Tweedie) step on the rescaled point,
  x <- x + sigma^2 grad log p_sigma(x) with p_sigma = (1/n) sum_i N(y_i, sigma^2 I), which equals
  sum_i softmax_i(-||x - y_i||^2 / (2 sigma^2)) y_i: a point inside the convex hull of the
  training set, no longer a copy. Their theory suggests sigma = n^(-1/(d+4)).
* **Gaussian KDE of the training points**, the trivial generaliser: y_i + h eps.
"""

from __future__ import annotations

import torch

from .flow_matching import closed_form_velocity, generate


def _check_points(train_points: torch.Tensor, x0: torch.Tensor) -> None:
    if train_points.ndim != 2 or x0.ndim != 2 or train_points.shape[1] != x0.shape[1]:
        raise ValueError(
            f"need train_points [M, D] and x0 [N, D] of the same D; got {tuple(train_points.shape)}, {tuple(x0.shape)}"
        )


def closed_form_samples(train_points: torch.Tensor, x0: torch.Tensor, steps: int = 100) -> torch.Tensor:
    """Euler with K = ``steps`` uniform steps on the closed-form field u* from x0 [N, D] -> [N, D]."""
    _check_points(train_points, x0)
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    field = lambda x, t: closed_form_velocity(x, t, train_points)
    return generate(field, x0, method="euler", steps=steps, t_end=1.0)


def bandwidth_rule(n: int, d: int) -> float:
    """sigma = n^(-1/(d+4)), the rate-optimal bandwidth of Lyu et al. (2025) for n points in d dimensions."""
    if n < 1 or d < 1:
        raise ValueError(f"need n, d >= 1, got {n}, {d}")
    return n ** (-1.0 / (d + 4))


def scott_bandwidth(train_points: torch.Tensor) -> float:
    """Scott's rule for an isotropic KDE of the training points: n^(-1/(d+4)) times their mean coordinate std.

    This is the rate of :func:`bandwidth_rule` put on the data's scale (Lyu et al. assume unit-scale
    data); scipy's ``gaussian_kde`` uses the same factor with the full sample covariance.
    """
    if train_points.ndim != 2 or len(train_points) < 2:
        raise ValueError(f"need train_points [M, D] with M >= 2, got {tuple(train_points.shape)}")
    n, d = train_points.shape
    return bandwidth_rule(n, d) * train_points.var(dim=0).mean().sqrt().item()


def tweedie_step(x: torch.Tensor, train_points: torch.Tensor, sigma: float) -> torch.Tensor:
    """x + sigma^2 grad log p_sigma(x) for p_sigma = (1/n) sum_i N(y_i, sigma^2 I): the softmax-weighted mean of the y_i."""
    _check_points(train_points, x)
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    weights = torch.softmax(-torch.cdist(x, train_points).square() / (2 * sigma**2), dim=1)
    return weights @ train_points


def inertial_samples(train_points: torch.Tensor, x0: torch.Tensor, sigma: float, steps: int = 100) -> torch.Tensor:
    """Inertial empirical diffusion: the empirical flow from x0 [N, D] stopped at noise sigma, then one Tweedie step.

    The ODE is integrated with ``steps`` uniform Euler steps over [0, 1 / (1 + sigma)].
    """
    _check_points(train_points, x0)
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    t_stop = 1.0 / (1.0 + sigma)
    field = lambda x, t: closed_form_velocity(x, t, train_points)
    x_stop = generate(field, x0, method="euler", steps=steps, t_end=t_stop)
    return tweedie_step(x_stop / t_stop, train_points, sigma)


def kde_samples(
    train_points: torch.Tensor, n: int, bandwidth: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """n draws from the Gaussian KDE (1/M) sum_i N(y_i, h^2 I) of the training points [M, D]."""
    if train_points.ndim != 2 or n < 1 or bandwidth <= 0:
        raise ValueError(f"need train_points [M, D], n >= 1 and bandwidth > 0; got {tuple(train_points.shape)}, {n}, {bandwidth}")
    index = torch.randint(0, len(train_points), (n,), generator=generator).to(train_points.device)
    noise = torch.randn(n, train_points.shape[1], generator=generator, dtype=train_points.dtype).to(train_points.device)
    return train_points[index] + bandwidth * noise
