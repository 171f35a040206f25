"""Results files, atomic writes, resumable geodesic solves, and the ensemble field statistics."""

import json
import warnings

import pytest
import torch

from support.core.geodesics import solve_geodesics
from support.core.parameters import flatten, select_parameters
from support.infra.profiles import get_profile
from support.infra.results import (
    CheckpointError, atomic_torch_save, checkpoint_dir, markdown_table, read_matching_results, results_dir, run_metadata,
    write_results,
)
from support.models.ensembles import ensemble_field_std, ensemble_velocity
from support.models.flow_matching import VelocityMLP

torch.set_default_dtype(torch.float64)


def banana(theta):
    return (theta[1] - theta[0] ** 2) ** 2 + 0.1 * theta[0] ** 2


def test_write_results_is_atomic_json_with_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_BUILD_DIR", str(tmp_path))
    path = write_results("demo", {"ratio": 0.5}, get_profile("smoke"))
    assert path == tmp_path / "smoke" / "results" / "demo.json"
    payload = json.loads(path.read_text())
    assert payload["results"] == {"ratio": 0.5}
    assert {"profile", "device", "date", "commit", "torch"} <= set(payload["metadata"])
    assert [p.name for p in path.parent.iterdir()] == ["demo.json"]  # no temporary files left behind


def test_run_metadata_names_the_cpu_model_and_the_kernels_instruction_set():
    # results on a CPU repeat bit for bit on one machine, not across CPU models (chapter 13's training)
    device = run_metadata(get_profile("smoke"))["device"]
    capability = torch.backends.cpu.get_cpu_capability()
    assert device.startswith("cpu (") and device.endswith(f", {capability})") and len(device) > len(f"cpu (, {capability})")


def test_each_profile_and_seed_keeps_its_own_folder_under_book_build_dir(tmp_path, monkeypatch):
    """#21 D1: with one BOOK_BUILD_DIR a smoke run used to overwrite the paper run's results and checkpoints."""
    monkeypatch.setenv("BOOK_BUILD_DIR", str(tmp_path))
    smoke, paper = get_profile("smoke"), get_profile("paper")
    assert checkpoint_dir(smoke) != checkpoint_dir(paper) and results_dir(smoke) != results_dir(paper)
    write_results("demo", {"ratio": 0.5}, paper)
    write_results("demo", {"ratio": 0.1}, smoke)
    assert json.loads((results_dir(paper) / "demo.json").read_text())["results"] == {"ratio": 0.5}
    monkeypatch.setenv("BOOK_SEED", "3")
    assert checkpoint_dir(get_profile("smoke")) == tmp_path / "smoke-seed3" / "checkpoints"


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

    calls = []

    def counted(theta):
        calls.append(1)
        return banana(theta)

    resumed = solve_geodesics(counted, theta, v, chunk_size=2, checkpoint=path)
    assert torch.equal(resumed.endpoint, first.endpoint) and bool(resumed.converged.all())
    assert len(calls) == 2  # the loss's value and gradient at theta for the fingerprint; no curve is solved again
    # a partially finished file: drop two curves, they (and only they) are solved again
    saved = torch.load(path)
    saved["status"][:2] = -1
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
    scaled = lambda th: 2 * banana(th)  # same theta, v, times and options, another loss (#21)
    with pytest.warns(UserWarning, match="loss, theta"):
        solve_geodesics(scaled, theta, -torch.ones(2, 2), checkpoint=path)


def test_a_non_finite_curve_is_checkpointed_with_the_others(tmp_path):
    """#21 D3: a curve that runs into NaN is flagged and saved; the rerun resumes instead of failing again."""
    nan = torch.tensor(float("nan"))
    loss = lambda th: banana(th) * torch.where(th[0] > 1, nan, 1.0)
    theta, v = torch.zeros(2), torch.tensor([[0.2, 0.1], [4.0, 0.0], [-0.3, 0.2]])
    path = tmp_path / "geodesics.pt"
    first = solve_geodesics(loss, theta, v, chunk_size=2, checkpoint=path)
    assert first.converged.tolist() == [True, False, True]
    saved = torch.load(path)
    assert saved["status"].tolist() == first.status.tolist()
    calls = []

    def counted(th):
        calls.append(1)
        return loss(th)

    again = solve_geodesics(counted, theta, v, chunk_size=2, checkpoint=path)
    assert len(calls) == 2 and torch.equal(again.status, first.status)
    assert torch.equal(again.endpoint[[0, 2]], first.endpoint[[0, 2]])


def test_ensemble_field_std_matches_a_loop_over_models():
    torch.manual_seed(0)
    model = VelocityMLP(dim=1, hidden=(8,)).double()
    layout = select_parameters(model)
    thetas = flatten(model, layout) + 0.1 * torch.randn(5, layout.dim)
    x, t = torch.randn(7, 1), torch.rand(7)
    expected = ensemble_velocity(model, layout, thetas, x, t).std(dim=0)
    for particles in (3, 14, 10_000):  # chunks of 1, 2 and all 5 models
        assert torch.allclose(ensemble_field_std(model, layout, thetas, x, t, particles_per_chunk=particles), expected)
    with pytest.raises(ValueError, match="particles_per_chunk must be positive"):
        ensemble_field_std(model, layout, thetas, x, t, particles_per_chunk=0)
    with pytest.raises(ValueError, match="two models"):
        ensemble_field_std(model, layout, thetas[:1], x, t)


@pytest.mark.parametrize("content, match", [
    (b"", "cannot be read"),
    (b"garbage, not a checkpoint", "cannot be read"),
])
def test_unreadable_geodesic_checkpoints_name_the_file_and_the_fix(tmp_path, content, match):
    """#21: empty, truncated or garbage files gave bare EOFError / UnpicklingError (the latter advising the
    unsafe weights_only=False) that named neither the file nor what to do."""
    path = tmp_path / "geodesics.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"{match}.*delete .*geodesics.pt") as error:
        solve_geodesics(banana, torch.zeros(2), torch.ones(1, 2), checkpoint=path)
    assert "weights_only=False" not in str(error.value)
    assert path.read_bytes() == content  # left in place for inspection


def test_truncated_and_wrong_structure_checkpoints_are_refused(tmp_path):
    path = tmp_path / "geodesics.pt"
    solve_geodesics(banana, torch.zeros(2), torch.ones(1, 2), checkpoint=path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="cannot be read"):
        solve_geodesics(banana, torch.zeros(2), torch.ones(1, 2), checkpoint=path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="is a list, not one this code writes"):
        solve_geodesics(banana, torch.zeros(2), torch.ones(1, 2), checkpoint=path)
    torch.save({"fingerprint": "x", "states": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="without status, nfe, reached"):
        solve_geodesics(banana, torch.zeros(2), torch.ones(1, 2), checkpoint=path)


def test_results_with_non_finite_numbers_are_refused_naming_where(tmp_path, monkeypatch):
    """#21: write_results wrote a bare NaN, which is not valid JSON."""
    monkeypatch.setenv("BOOK_BUILD_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"results\['w1'\]\[1\] = nan"):
        write_results("demo", {"ok": 1.0, "w1": [0.5, float("nan")]}, get_profile("smoke"))
    assert not (tmp_path / "smoke" / "results" / "demo.json").exists()
    path = write_results("demo", {"missing": None, "w1": [0.5]}, get_profile("smoke"))
    assert json.loads(path.read_text())["results"]["missing"] is None


def test_a_profile_name_that_is_not_a_string_is_refused():
    with pytest.raises(TypeError, match="must be a string"):
        get_profile(123)
