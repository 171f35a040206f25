"""A flow-matching network trained to memorise a small training set, and its exact Laplace approximation.

The toy experiments (Sec. 5.1, App. C.1, C.2) share one recipe: a fixed flow-matching dataset
{t_i = i/N, x0_i, x*_i} over the training points (App. C.1), a velocity MLP trained full batch
to a minimum theta* of the deterministic loss (3), and a Laplace approximation at theta* from the
exact Hessian over all parameters (uniform prior), restricted to its positive part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.laplace import LowRankLaplace, exact_hessian, positive_part
from ..core.mlp_curvature import MLPRegressionLoss
from ..core.parameters import ParameterLayout, flatten, select_parameters
from ..data.toy_data import IsotropicGMM
from ..models.flow_matching import (
    FlowMatchingDataset,
    VelocityMLP,
    deterministic_dataset,
    flow_matching_regression,
    train_velocity_field,
)

RELATIVE_EIGENVALUE_FLOOR = 1e-3
"""The book's positive part for the toy networks: keep eigenpairs above 1e-3 of the largest
eigenvalue (the Laplace chapter shows why the literal lambda > 0 is ill-posed for an exact Hessian)."""


@dataclass
class MemorisingFlow:
    """Everything a toy chapter shares: target, training set, dataset, trained model."""

    target: IsotropicGMM
    train_points: torch.Tensor
    data: FlowMatchingDataset
    model: VelocityMLP
    loss_history: torch.Tensor


def train_memorising_flow(
    target: IsotropicGMM,
    train_points: torch.Tensor,
    n_pairs: int,
    hidden: tuple[int, ...],
    steps: int,
    learning_rate: float,
    generator: torch.Generator,
    progress: bool = True,
) -> MemorisingFlow:
    """Draw the fixed dataset and initial weights from ``generator``, then train u_theta to its minimum.

    The model lives on ``train_points``' device and dtype. Call right after seeding so the result
    is reproducible.
    """
    data = deterministic_dataset(train_points, n_pairs, generator)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    model = VelocityMLP(dim=train_points.shape[1], hidden=hidden).to(train_points)
    history = train_velocity_field(model, data, steps, learning_rate, progress=progress)
    model.eval()
    return MemorisingFlow(target, train_points, data, model, history)


@dataclass
class FlowLaplace:
    """The Laplace approximation of a memorising flow over all its parameters (App. C.1)."""

    theta_star: torch.Tensor
    loss: MLPRegressionLoss
    """L_FM(theta), eq (3), as an MLP regression, so geodesics get eq (19)'s right-hand side by hand."""
    layout: ParameterLayout
    eigenvalues: torch.Tensor
    """The exact Hessian's eigenvalues, descending (all of them, both signs)."""
    eigenvectors: torch.Tensor
    """[K, K] matching orthonormal eigenvectors (columns)."""
    posterior: LowRankLaplace
    """N(0, H_+^{-1}) on the eigenpairs above the floor."""


def flow_laplace(problem: MemorisingFlow, relative_floor: float = RELATIVE_EIGENVALUE_FLOOR) -> FlowLaplace:
    """Exact Hessian of L_FM at theta* (uniform prior), eigendecomposed, positive part above the floor."""
    layout = select_parameters(problem.model)
    theta_star, loss = flatten(problem.model, layout), flow_matching_regression(problem.model, problem.data)
    eigenvalues, eigenvectors = torch.linalg.eigh(exact_hessian(loss, theta_star))
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    posterior = positive_part(eigenvalues, eigenvectors, min_eigenvalue=relative_floor * eigenvalues[0].item())
    return FlowLaplace(theta_star, loss, layout, eigenvalues, eigenvectors, posterior)
