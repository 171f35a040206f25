"""Results files, atomic writes, resumable geodesic solves, and the ensemble field statistics."""

import json
import warnings

import pytest
import torch

from support.core.geodesics import solve_geodesics
from support.core.parameters import flatten, select_parameters
from support.infra.profiles import get_profile
from support.infra.results import atomic_torch_save, markdown_table, read_matching_results, write_results
from support.models.ensembles import ensemble_field_std, ensemble_velocity
from support.models.flow_matching import VelocityMLP

torch.set_default_dtype(torch.float64)


def banana(theta):
    return (theta[1] - theta[0] ** 2) ** 2 + 0.1 * theta[0] ** 2


def test_write_results_is_atomic_json_with_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_BUILD_DIR", str(tmp_path))
    path = write_results("demo", {"ratio": 0.5}, get_profile("smoke"))
    assert path == tmp_path / "results" / "demo.json"
    payload = json.loads(path.read_text())
    assert payload["results"] == {"ratio": 0.5}
    assert {"profile", "device", "date", "commit", "torch"} <= set(payload["metadata"])
    assert [p.name for p in path.parent.iterdir()] == ["demo.json"]  # no temporary files left behind


def test_read_matching_results_only_returns_a_run_of_this_profile_and_commit(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_BUILD_DIR", str(tmp_path))
    smoke = get_profile("smoke")
    assert read_matching_results("demo", smoke) is None  # nothing written yet
    path = write_results("demo", {"ratio": 0.5}, smoke)
    assert read_matching_results("demo", smoke) == {"ratio": 0.5}
    payload = json.loads(path.read_text())
    payload["metadata"]["commit"] = "0" * 40  # another commit's numbers need not reproduce here
    path.write_text(json.dumps(payload))
    assert read_matching_results("demo", smoke) is None


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.pt"
    atomic_torch_save({"x": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"x": Unpicklable()}, path)
    assert torch.equal(torch.load(path)["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_markdown_table_shape_check():
    assert markdown_table(["a", "b"], [[1, 2]]).splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]
    with pytest.raises(ValueError, match="one entry per header"):
        markdown_table(["a", "b"], [[1]])


def test_geodesic_checkpoint_resumes_without_recomputing(tmp_path):
    theta = torch.tensor([0.3, -0.2])
    v = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "geodesics.pt"
    first = solve_geodesics(banana, theta, v, chunk_size=2, checkpoint=path)

    def must_not_run(theta):
        raise AssertionError("the checkpoint should have made this solve unnecessary")

    resumed = solve_geodesics(must_not_run, theta, v, chunk_size=2, checkpoint=path)
    assert torch.equal(resumed.endpoint, first.endpoint) and bool(resumed.converged.all())
    # a partially finished file: drop two curves, they (and only they) are solved again
    saved = torch.load(path)
    saved["done"][:2] = False
    saved["converged"][:2] = False
    saved["states"][:, :2] = float("nan")
    torch.save(saved, path)
    again = solve_geodesics(banana, theta, v, chunk_size=2, checkpoint=path)
    assert torch.allclose(again.endpoint, first.endpoint, atol=1e-12)


def test_geodesic_checkpoint_for_other_inputs_is_replaced_with_a_warning(tmp_path):
    theta = torch.tensor([0.3, -0.2])
    path = tmp_path / "geodesics.pt"
    solve_geodesics(banana, theta, torch.ones(2, 2), checkpoint=path)
    with pytest.warns(UserWarning, match="other inputs"):
        other = solve_geodesics(banana, theta, -torch.ones(2, 2), checkpoint=path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = solve_geodesics(banana, theta, -torch.ones(2, 2), checkpoint=path)
    assert torch.equal(other.endpoint, again.endpoint)


def test_ensemble_field_std_matches_a_loop_over_models():
    torch.manual_seed(0)
    model = VelocityMLP(dim=1, hidden=(8,)).double()
    layout = select_parameters(model)
    thetas = flatten(model, layout) + 0.1 * torch.randn(5, layout.dim)
    x, t = torch.randn(7, 1), torch.rand(7)
    expected = ensemble_velocity(model, layout, thetas, x, t).std(dim=0)
    assert torch.allclose(ensemble_field_std(model, layout, thetas, x, t, models_per_chunk=2), expected)
    with pytest.raises(ValueError, match="two models"):
        ensemble_field_std(model, layout, thetas[:1], x, t)
