"""benchmarks/cifar_paper_path.py at toy size: the paper-path check itself must keep working."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cifar_paper_path.py"


def run_script(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    """Run the script as ``python SCRIPT args`` would, with float32 as the default dtype (as in a fresh process)."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # another test module in this worker may have set float64
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        torch.set_default_dtype(default)


def test_paper_path_runs_every_stage_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report.json"
    run_script(monkeypatch, "--unet", "smoke", "--n-train", "96", "--selection-images", "4", "--hessian-batch", "8",
               "--micro-batch", "3", "--hvp-steps", "3", "--synthetic-dim", "300", "--synthetic-k", "120",
               "--checkpoints", str(tmp_path / "ckpt"), "--out", str(out))
    payload = json.loads(out.read_text())
    results = payload["results"]
    assert payload["metadata"]["profile"] == "paper"
    assert results["sizes"]["n_train"] == 96 and results["sizes"]["n_batches"] == 5  # the paper's B
    assert results["micro_batch"] == 3 and results["real_lanczos"]["steps"] == 3
    assert results["training"]["checkpoint_and_resume"] == "ok"
    assert (tmp_path / "ckpt" / "latest.pt").exists() and (tmp_path / "ckpt" / "best.pt").exists()
    assert results["synthetic_lanczos"]["top10_relative_error"] < 1e-4
    assert 0 <= results["memorisation_of_generated"] <= 1
    assert all(value > 0 for value in results["timings"].values())


def test_synthetic_lanczos_check_passes_at_enough_steps_and_fails_loudly_otherwise() -> None:
    synthetic_lanczos = runpy.run_path(str(SCRIPT))["synthetic_lanczos"]
    report = synthetic_lanczos(300, 150, torch.Generator().manual_seed(0))
    assert report["top10_relative_error"] < 1e-4 and report["ritz_orthogonality"] < 1e-4
    with pytest.raises(SystemExit, match="FAILED: synthetic Lanczos: top-10 Ritz values"):
        synthetic_lanczos(300, 12, torch.Generator().manual_seed(0))  # too few steps for ten converged values
