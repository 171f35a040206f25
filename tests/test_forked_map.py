"""forked_map: the results of one process, in order, from several forked ones."""

import os

import pytest
import torch

from support.core.parameters import flatten, select_parameters
from support.infra.forked_map import forked_map
from support.models.ensembles import generate_ensemble
from support.models.flow_matching import VelocityMLP


def test_forked_map_returns_every_result_in_order_from_other_processes() -> None:
    scale = torch.tensor(3.0)  # a closure over a tensor: inherited by the forked workers, never pickled
    results = forked_map(lambda i: (i, float(scale * i), os.getpid()), list(range(7)), workers=2)
    assert [(i, value) for i, value, _ in results] == [(i, 3.0 * i) for i in range(7)]
    assert os.getpid() not in {pid for *_, pid in results}
    assert forked_map(lambda i: i + 1, [1], workers=2) == [2]
    assert forked_map(lambda i: i, [], workers=2) == []
    with pytest.raises(ValueError, match="workers"):
        forked_map(lambda i: i, [1, 2], workers=0)


def test_an_ensemble_generated_by_two_processes_equals_one_generated_by_one() -> None:
    torch.manual_seed(0)
    model = VelocityMLP(dim=1, hidden=(8, 8)).double()
    layout = select_parameters(model)
    thetas = flatten(model, layout) + 0.1 * torch.randn(7, layout.dim, dtype=torch.float64)
    x0 = torch.randn(5, 1, dtype=torch.float64)
    options = dict(particles_per_solve=10, method="euler", steps=20)  # groups of 2 models, one of 1
    one = generate_ensemble(model, layout, thetas, x0, workers=1, **options)
    assert one.shape == (7, 5, 1)
    assert torch.equal(generate_ensemble(model, layout, thetas, x0, workers=2, **options), one)
