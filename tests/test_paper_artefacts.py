"""Figures saved by the chapters, and the export of a paper-profile run into book/paper_results/."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from support.infra.paper_artefacts import (  # noqa: E402
    PAPER_RESULTS_DIR,
    export_paper_results,
    load_paper_results,
    main,
    provenance_text,
)
from support.infra.profiles import get_profile  # noqa: E402
from support.infra.provenance import REPO_ROOT, git_commit, result_chapters  # noqa: E402
from support.infra.results import save_figure, write_results  # noqa: E402


def paper_run(build: Path, monkeypatch: pytest.MonkeyPatch, figures: tuple[str, ...] = ("fig12", "fig13")) -> Path:
    """A finished paper-profile run under ``build``: a results file and its figures; returns the results folder."""
    monkeypatch.setenv("BOOK_BUILD_DIR", str(build))
    profile = get_profile("paper")
    for name in figures:
        fig, ax = plt.subplots(figsize=(2, 1.5))
        ax.plot([0, 1], [1, 0])
        save_figure(fig, "cifar10", name, profile)
        plt.close(fig)
    return write_results("cifar10", {"memorisation": {"map": 0.9}}, profile).parent


def test_save_figure_writes_a_png_under_the_results_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = paper_run(tmp_path, monkeypatch, figures=("fig6",))
    path = results / "cifar10" / "fig6.png"
    assert path.exists() and mpimg.imread(path).ndim == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["fig6.png"]  # no temporary files left behind


def test_export_copies_results_and_figures_and_replaces_stale_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, target = paper_run(tmp_path / "build", monkeypatch), tmp_path / "paper_results"
    (target / "cifar10").mkdir(parents=True)
    (target / "cifar10" / "fig99.png").write_bytes(b"old run")
    written = export_paper_results("cifar10", source, target)
    assert [p.name for p in written] == ["cifar10.json", "fig12.png", "fig13.png"]
    loaded = load_paper_results("cifar10", target)
    assert loaded is not None and loaded.results == {"memorisation": {"map": 0.9}}
    assert loaded.metadata["profile"] == "paper" and [p.name for p in loaded.figures] == ["fig12.png", "fig13.png"]


def test_load_paper_results_is_none_when_nothing_was_committed(tmp_path: Path) -> None:
    assert load_paper_results("cifar10", tmp_path) is None


def test_export_refuses_runs_without_paper_provenance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "paper_results"
    with pytest.raises(FileNotFoundError, match="BOOK_PROFILE=paper"):
        export_paper_results("cifar10", tmp_path / "nothing", target)
    source = paper_run(tmp_path / "build", monkeypatch)
    path = source / "cifar10.json"
    payload = json.loads(path.read_text())
    for key, value, message in (("profile", "smoke", "not 'paper'"), ("commit", "unknown", "no commit")):
        changed = {**payload, "metadata": {**payload["metadata"], key: value}}
        path.write_text(json.dumps(changed))
        with pytest.raises(ValueError, match=message):
            export_paper_results("cifar10", source, target)
    unsourced = {**payload, "metadata": {k: v for k, v in payload["metadata"].items() if k != "sources"}}
    path.write_text(json.dumps(unsourced))
    with pytest.raises(ValueError, match="no source hashes"):
        export_paper_results("cifar10", source, target)
    assert not target.exists()  # nothing was half-exported


def test_a_failed_export_keeps_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, target = paper_run(tmp_path / "build", monkeypatch), tmp_path / "paper_results"
    export_paper_results("cifar10", source, target)
    before = (target / "cifar10.json").read_text()
    (source / "cifar10" / "fig12.png").unlink()
    (source / "cifar10" / "fig12.png").mkdir()  # a "figure" that cannot be copied: the copy fails part-way
    monkeypatch.setattr("support.infra.paper_artefacts._read",
                        lambda name, folder: (json.loads((Path(folder) / f"{name}.json").read_text()),
                                              [Path(folder) / name / "fig12.png"]))
    with pytest.raises(OSError):
        export_paper_results("cifar10", source, target)
    assert (target / "cifar10.json").read_text() == before
    assert sorted(p.name for p in (target / "cifar10").glob("*.png")) == ["fig12.png", "fig13.png"]


def test_command_line_exports_from_the_paper_build_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    paper_run(tmp_path / "build", monkeypatch)
    main(["cifar10", "--target", str(tmp_path / "paper_results")])
    assert "cifar10.json" in capsys.readouterr().out
    assert (tmp_path / "paper_results" / "cifar10" / "fig13.png").exists()


def test_provenance_names_the_commit_and_every_changed_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paper = load_paper_results("cifar10", paper_run(tmp_path / "build", monkeypatch))
    assert paper is not None and paper.metadata["commit"] == git_commit()
    text = provenance_text("cifar10", paper)
    assert paper.metadata["commit"][:12] in text and "None of the sources" in text  # this tree made it
    edited = {**paper.metadata["sources"], "support/core/geodesics.py": "0" * 64}
    stale = load_paper_results("cifar10", paper_run(tmp_path / "build", monkeypatch))
    stale.metadata["sources"] = edited
    text = provenance_text("cifar10", stale)
    assert "The code has changed since that run" in text and "`support/core/geodesics.py`" in text


@pytest.mark.parametrize("path", sorted(PAPER_RESULTS_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_every_committed_paper_artefact_is_shown_with_its_provenance(path: Path) -> None:
    """A committed artefact is a paper-profile run from a commit of this repository with its source
    hashes, and its chapter shows it under provenance_text (which names the commit and any source
    changed since), so no page presents numbers of older code as this code's."""
    paper = load_paper_results(path.stem)
    assert path.stem in result_chapters(), f"{path.name}: no chapter writes these results"
    meta = paper.metadata
    assert meta["profile"] == "paper" and len(meta["commit"]) == 40 and int(meta["commit"], 16) >= 0
    assert set(meta["sources"]) >= {f"{result_chapters()[path.stem]} (code cells)", "pyproject.toml"}
    chapter = (REPO_ROOT / result_chapters()[path.stem]).read_text()
    assert f'load_paper_results("{path.stem}")' in chapter and "provenance_text(" in chapter
