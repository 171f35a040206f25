"""The 1D toy problem of Sec. 5.1 / App. C.1, set up once for every chapter that needs it.

p0 = N(0, 1); target p_* = GMM with means +-1.5 and variances 0.1; training set {-1.5, 1.5}; a
fixed flow-matching dataset; a velocity MLP trained (full batch) until it memorises.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .flow_matching import FlowMatchingDataset, VelocityMLP, deterministic_dataset, train_velocity_field
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
