"""The 1D toy problem of Sec. 5.1 / App. C.1, set up once for every chapter that needs it.

p0 = N(0, 1); target p_* = GMM with means +-1.5 and variances 0.1; training set {-1.5, 1.5}; a
fixed flow-matching dataset; a velocity MLP trained (full batch) until it memorises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .flow_matching import (
    FlowMatchingDataset,
    VelocityMLP,
    deterministic_dataset,
    flow_matching_loss,
    train_velocity_field,
)
from .laplace import LowRankLaplace, exact_hessian, positive_part
from .parameters import ParameterLayout, parameter_loss
from .profiles import Profile
from .toy_data import IsotropicGMM, gmm_1d


@dataclass
class MemorisingFlow1D:
    """Everything the 1D chapters share: target, training set, dataset, trained model."""

    target: IsotropicGMM
    train_points: torch.Tensor
    data: FlowMatchingDataset
    model: VelocityMLP
    loss_history: torch.Tensor


def fit_memorising_flow_1d(profile: Profile, generator: torch.Generator, progress: bool = True) -> MemorisingFlow1D:
    """Build the Sec. 5.1 problem with ``profile``'s sizes and train u_theta to its minimum.

    Draws the dataset and initial weights from ``generator`` (call right after seeding so the
    result is reproducible), on ``profile.device`` in ``profile.dtype``.
    """
    sizes = profile.flow_matching
    target = gmm_1d(profile.dtype)
    train_points = target.means.to(profile.device)
    data = deterministic_dataset(train_points, sizes.n_pairs, generator)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    model = VelocityMLP(dim=1, hidden=sizes.hidden).to(device=profile.device, dtype=profile.dtype)
    history = train_velocity_field(model, data, sizes.train_steps, sizes.learning_rate, progress=progress)
    model.eval()
    return MemorisingFlow1D(target, train_points, data, model, history)


def small_network_loss(
    generator: torch.Generator, n_pairs: int = 256, hidden: tuple[int, ...] = (6,), steps: int = 3000
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """A deliberately small 1D flow-matching network (25 parameters by default), trained to a minimum.

    Returns ``(theta_star, loss)`` with ``loss`` a function of the flat parameters (float64). Small
    enough for exact Hessians and brute-force Christoffel symbols in the geometry chapters.
    """
    data = deterministic_dataset(gmm_1d(torch.float64).means, n_pairs, generator)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    model = VelocityMLP(dim=1, hidden=hidden).to(torch.float64)
    train_velocity_field(model, data, steps=steps, learning_rate=1e-2, progress=False)
    theta_star, loss, _ = parameter_loss(model, lambda forward: flow_matching_loss(forward, data))
    return theta_star, loss


RELATIVE_EIGENVALUE_FLOOR = 1e-3
"""The book's positive part for the 1D network: keep eigenpairs above 1e-3 of the largest
eigenvalue (the Laplace chapter shows why the literal lambda > 0 is ill-posed for an exact Hessian)."""


@dataclass
class Laplace1D:
    """The Laplace approximation of the memorising 1D flow over all its parameters (App. C.1)."""

    theta_star: torch.Tensor
    loss: Callable[[torch.Tensor], torch.Tensor]
    layout: ParameterLayout
    eigenvalues: torch.Tensor
    """The exact Hessian's eigenvalues, descending (all of them, both signs)."""
    posterior: LowRankLaplace


def laplace_1d(problem: MemorisingFlow1D, relative_floor: float = RELATIVE_EIGENVALUE_FLOOR) -> Laplace1D:
    """Exact Hessian of L_FM at theta* (uniform prior), eigendecomposed, positive part above the floor."""
    theta_star, loss, layout = parameter_loss(problem.model, lambda forward: flow_matching_loss(forward, problem.data))
    eigenvalues, eigenvectors = torch.linalg.eigh(exact_hessian(loss, theta_star))
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    posterior = positive_part(eigenvalues, eigenvectors, min_eigenvalue=relative_floor * eigenvalues[0].item())
    return Laplace1D(theta_star, loss, layout, eigenvalues, posterior)
