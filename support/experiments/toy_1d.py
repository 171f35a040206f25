"""The 1D toy problem of Sec. 5.1 / App. C.1, set up once for every chapter that needs it.

p0 = N(0, 1); target p_* = GMM with means +-1.5 and variances 0.1; training set {-1.5, 1.5}; a
fixed flow-matching dataset; a velocity MLP trained (full batch) until it memorises.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.parameters import parameter_loss
from ..data.toy_data import gmm_1d
from ..infra.profiles import Profile
from ..models.flow_matching import flow_matching_loss
from .memorising_flow import MemorisingFlow, train_memorising_flow


def fit_memorising_flow_1d(profile: Profile, generator: torch.Generator, progress: bool = True) -> MemorisingFlow:
    """Build the Sec. 5.1 problem with ``profile``'s sizes and train u_theta to its minimum.

    Draws the dataset and initial weights from ``generator`` (call right after seeding so the
    result is reproducible), on ``profile.device`` in ``profile.dtype``.
    """
    sizes = profile.flow_matching
    target = gmm_1d(profile.dtype)
    train_points = target.means.to(profile.device)
    return train_memorising_flow(
        target, train_points, sizes.n_pairs, sizes.hidden, sizes.train_steps, sizes.learning_rate, generator, progress
    )


def small_network_loss(
    generator: torch.Generator, n_pairs: int = 256, hidden: tuple[int, ...] = (6,), steps: int = 3000
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """A deliberately small 1D flow-matching network (25 parameters by default), trained to a minimum.

    Returns ``(theta_star, loss)`` with ``loss`` a function of the flat parameters (float64). Small
    enough for exact Hessians and brute-force Christoffel symbols in the geometry chapters.
    """
    target = gmm_1d(torch.float64)
    problem = train_memorising_flow(target, target.means, n_pairs, hidden, steps, 1e-2, generator, progress=False)
    theta_star, loss, _ = parameter_loss(problem.model, lambda forward: flow_matching_loss(forward, problem.data))
    return theta_star, loss
