"""Paper-scale results committed beside the book (``book/paper_results/``).

The paper profile of chapter 12 needs a GPU and the CIFAR-10 archive, so the book built in CI
(smoke profile, CPU) cannot produce its numbers live. A paper-profile run writes its results file
and figures under ``_build/paper/results/`` (:func:`support.infra.results.write_results`,
:func:`support.infra.results.save_figure`); ::

    python -m support.infra.paper_artefacts cifar10

copies them into ``book/paper_results/`` after checking that they come from a paper-profile run
with a known commit, and the chapter shows them, with their date, device and commit, beside the
live smoke run (:func:`load_paper_results`).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .profiles import get_profile
from .results import REPO_ROOT, atomic_write, results_dir

PAPER_RESULTS_DIR = REPO_ROOT / "book" / "paper_results"


@dataclass(frozen=True)
class PaperResults:
    """A committed paper-profile run: its provenance, its results and its figures (PNG paths, sorted)."""

    metadata: dict[str, Any]
    results: dict[str, Any]
    figures: tuple[Path, ...]


def _read(name: str, folder: Path) -> tuple[dict[str, Any], list[Path]]:
    path = Path(folder) / f"{name}.json"
    payload = json.loads(path.read_text())
    if not {"metadata", "results"} <= payload.keys():
        raise ValueError(f"{path} is not a results file (no 'metadata' and 'results')")
    return payload, sorted((Path(folder) / name).glob("*.png"))


def export_paper_results(name: str, source: Path, target: Path = PAPER_RESULTS_DIR) -> list[Path]:
    """Copy ``source/<name>.json`` and ``source/<name>/*.png`` to ``target``; returns the written paths.

    Raises
    ------
    FileNotFoundError
        If the results file or its figures are missing (run the chapter with ``BOOK_PROFILE=paper``).
    ValueError
        If the run was not a paper-profile run, or its commit is unknown (no provenance).
    """
    if not (Path(source) / f"{name}.json").exists():
        raise FileNotFoundError(f"no {name}.json in {source}: run the chapter with BOOK_PROFILE=paper first "
                                "(`BOOK_PROFILE=paper make book`)")
    payload, figures = _read(name, source)
    metadata = payload["metadata"]
    if metadata.get("profile") != "paper":
        raise ValueError(f"{source}/{name}.json comes from the {metadata.get('profile')!r} profile, not 'paper'")
    if metadata.get("commit", "unknown") == "unknown":
        raise ValueError(f"{source}/{name}.json has no commit: run the book from a git checkout")
    if not figures:
        raise FileNotFoundError(f"no figures in {Path(source) / name}: the chapter saves them with save_figure")
    figure_dir = Path(target) / name
    for stale in figure_dir.glob("*.png"):
        stale.unlink()
    written = []
    for figure in figures:
        destination = figure_dir / figure.name
        atomic_write(destination, lambda tmp, figure=figure: shutil.copyfile(figure, tmp))
        written.append(destination)
    destination = Path(target) / f"{name}.json"
    atomic_write(destination, lambda tmp: shutil.copyfile(Path(source) / f"{name}.json", tmp))
    return [destination, *written]


def load_paper_results(name: str, folder: Path = PAPER_RESULTS_DIR) -> PaperResults | None:
    """The committed paper-profile run ``name`` in ``folder``, or None if none has been committed."""
    if not (Path(folder) / f"{name}.json").exists():
        return None
    payload, figures = _read(name, folder)
    return PaperResults(payload["metadata"], payload["results"], tuple(figures))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Commit a paper-profile run's results and figures beside the book.")
    parser.add_argument("name", help="results name, e.g. cifar10")
    parser.add_argument("--source", type=Path, default=None, help="default: the paper profile's results folder")
    parser.add_argument("--target", type=Path, default=PAPER_RESULTS_DIR)
    args = parser.parse_args(argv)
    source = args.source or results_dir(get_profile("paper"))
    for path in export_paper_results(args.name, source, args.target):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
