"""The 2D toy problem of App. C.2, set up once for every chapter that needs it.

p0 = N(0, I_2); target p_* = equal-weight GMM with means +-(1.5, 1.5) and covariance 0.2 I; a
network memorises six points P_i, three around each mean, all at the same distance r from their
nearest mean (the paper's only condition on them).

Layout (the paper gives no coordinates): around mu_1 the three points form an equilateral
triangle at radius r, at angles 90, 210 and 330 degrees; around mu_2 they are the mirror images
-P_i, so the training set has the point symmetry x -> -x of p0 and p_*.

Radius: a model that memorises perfectly generates the uniform distribution on the six points,
whose W1 to p_* is a function of r alone (0.56 at r = 0, a minimum of 0.38 near r = 0.4, rising
again). The paper's one number about its MAP model is W1 = 0.4348 (Fig. 11); we take the larger
radius at which a perfect memoriser has exactly that distance, r = 0.655 (about 1.5 standard
deviations of a mode), so that our MAP's W1 can be read against the paper's.
"""

from __future__ import annotations

import math

import torch

from ..data.toy_data import IsotropicGMM, gmm_2d
from ..infra.profiles import Profile
from .memorising_flow import MemorisingFlow, train_memorising_flow

MEMORISED_RADIUS = 0.655
"""Distance of every memorised point P_i from its nearest mean (see the module docstring)."""


def memorised_points_2d(target: IsotropicGMM, radius: float = MEMORISED_RADIUS) -> torch.Tensor:
    """The six training points [6, 2]: a triangle at ``radius`` around mu_1 and its mirror image around mu_2."""
    if target.dim != 2 or target.n_components != 2:
        raise ValueError(f"need a two-component 2D mixture, got {target.n_components} components in {target.dim}D")
    if not 0 < radius:
        raise ValueError(f"radius must be positive, got {radius}")
    angles = torch.tensor([90.0, 210.0, 330.0], dtype=target.means.dtype) * math.pi / 180
    triangle = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return torch.cat([target.means[0] + triangle, -(target.means[0] + triangle)])


def fit_memorising_flow_2d(profile: Profile, generator: torch.Generator, progress: bool = True) -> MemorisingFlow:
    """Build the App. C.2 problem with ``profile``'s sizes and train u_theta to its minimum.

    Draws the dataset and initial weights from ``generator`` (call right after seeding), on
    ``profile.device`` in ``profile.dtype``.
    """
    sizes = profile.experiment_2d
    target = gmm_2d(profile.dtype)
    train_points = memorised_points_2d(target).to(profile.device)
    return train_memorising_flow(
        target, train_points, sizes.n_pairs, sizes.hidden, sizes.train_steps, sizes.learning_rate, generator, progress
    )
