"""A convex potential whose gradient is fitted to sufficient statistics: the Hessian metric of an
exponential family from samples alone (after Lobashev et al., 2025).

For an exponential family p(x | eta) = exp(eta^T T(x) - log Z(eta)), grad log Z(eta) = E[T(x) | eta] and
the Fisher metric is the Hessian of log Z. So an input-convex network psi (:class:`InputConvexNetwork`)
fitted so that grad psi(eta) matches the mean of T over samples drawn at eta (:func:`fit_convex_potential`)
is log Z up to an affine function (which changes neither its Hessian nor Bregman divergences), and its
Hessian is a metric that is positive semi-definite by construction.

Their Theorem 1: with N samples from p(x | eta'), the posterior over eta (any continuous prior on a
compact domain) satisfies p(eta | x_1..N)^(1/N) -> exp(-D(eta, eta')) almost surely, with the Bregman
divergence D(eta, eta') = log Z(eta) - log Z(eta') - grad log Z(eta')^T (eta - eta')
(:func:`bregman_divergence`, :func:`scaled_log_posterior`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import grad, hessian, vmap
from tqdm.auto import tqdm

from ..infra.validation import require_positive_int

LogPartition = Callable[[torch.Tensor], torch.Tensor]
"""eta [..., d] -> log Z(eta) [...]: a log-partition (or a convex potential standing in for one), batched."""


class InputConvexNetwork(nn.Module):
    """psi: R^d -> R, convex in its input: two softplus layers whose weights on the previous layer are
    non-negative (softplus of free parameters), direct affine terms from the input, and a diagonal
    quadratic with non-negative weights (Amos et al., 2017).

    Softplus is convex and non-decreasing, and non-negative combinations of convex functions plus affine
    ones are convex, so every layer stays convex in the input. The input is first standardised by a fixed
    affine map (``center``, ``scale``: the training inputs' mean and standard deviation), which keeps
    convexity and puts every input on the scale the initialisation expects. The non-negative weights start
    small (softplus of about -2), so that the first layer's many units do not start out all alike.
    """

    def __init__(self, dim: int, hidden: int, center: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        require_positive_int("dim", dim)
        require_positive_int("hidden", hidden)
        if center.shape != (dim,) or scale.shape != (dim,) or not bool((scale > 0).all()):
            raise ValueError(f"need center and positive scale of shape [{dim}]")
        self.register_buffer("center", center.clone())
        self.register_buffer("scale", scale.clone())
        self.first = nn.Linear(dim, hidden)
        self.hidden_raw = nn.Parameter(0.5 * torch.randn(hidden, hidden) - 2)
        self.skip = nn.Linear(dim, hidden)
        self.out_raw = nn.Parameter(0.5 * torch.randn(hidden) - 2)
        self.quadratic_raw = nn.Parameter(torch.zeros(dim))
        self.out_skip = nn.Linear(dim, 1)

    def forward(self, eta: torch.Tensor) -> torch.Tensor:
        """[...] for eta [..., dim]."""
        u = (eta - self.center) / self.scale
        softplus = nn.functional.softplus
        z = softplus(self.first(u))
        z = softplus(z @ softplus(self.hidden_raw).T + self.skip(u))
        return (z @ softplus(self.out_raw) + self.out_skip(u).squeeze(-1)
                + 0.5 * (softplus(self.quadratic_raw) * u.square()).sum(-1))


def fit_convex_potential(
    eta: torch.Tensor, mean_statistics: torch.Tensor, hidden: int, steps: int, generator: torch.Generator,
    learning_rate: float = 3e-2, progress: bool = False,
) -> InputConvexNetwork:
    """Fit psi so that grad psi(eta_p) = the sample mean of T at eta_p (eta, mean_statistics: [P, d]).

    Full-batch Adam with a cosine schedule on the mean squared gradient mismatch; the weights are drawn
    from ``generator``. Raises if the fit does not end finite.
    """
    if eta.shape != mean_statistics.shape or eta.ndim != 2:
        raise ValueError(f"need eta and mean statistics of one shape [P, d]; got {tuple(eta.shape)}, "
                         f"{tuple(mean_statistics.shape)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        network = InputConvexNetwork(eta.shape[1], hidden, eta.mean(0), eta.std(0)).to(eta)
    optimiser = torch.optim.Adam(network.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    for _ in tqdm(range(steps), desc="convex potential", disable=not progress, leave=False):
        optimiser.zero_grad()
        point = eta.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(network(point).sum(), point, create_graph=True)
        loss = (gradient - mean_statistics).square().sum(-1).mean()
        loss.backward()
        optimiser.step()
        schedule.step()
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError("the convex potential's fit diverged: lower the learning rate")
    return network


def hessian_metric(potential: LogPartition, eta: torch.Tensor) -> torch.Tensor:
    """The Hessian of ``potential`` at every row of eta [P, d]: [P, d, d]."""
    return vmap(hessian(potential))(eta)


def bregman_divergence(potential: LogPartition, eta: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """D(eta, eta') = A(eta) - A(eta') - grad A(eta')^T (eta - eta') for rows eta [P, d] and one eta' [d]."""
    return potential(eta) - potential(reference) - (eta - reference) @ grad(potential)(reference)


def scaled_log_posterior(log_partition_values: torch.Tensor, eta: torch.Tensor, mean_statistic: torch.Tensor) -> torch.Tensor:
    """(1/N) log p(eta | x_1..N) on a grid of eta [G, d] under a flat prior, shifted so that its maximum is 0.

    With the log-likelihood N (eta^T T_bar - log Z(eta)), the prior and the normaliser contribute only a
    constant, which the shift removes; Theorem 1 says this tends to -D(eta, eta') as N grows.
    """
    scaled = eta @ mean_statistic - log_partition_values
    return scaled - scaled.max()
