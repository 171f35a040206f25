"""Paper-scale results committed beside the book (``book/paper_results/``).

The book built in CI runs the smoke profile on a CPU, so it cannot produce paper-scale numbers
live: chapter 12's paper profile needs a GPU and the CIFAR-10 archive, and chapters 7-11 take from
minutes to hours at the paper's sizes. A paper-profile run writes its results file (and any figures)
under ``_build/paper/results/`` (:func:`support.infra.results.write_results`,
:func:`support.infra.results.save_figure`); ::

    python -m support.infra.paper_artefacts experiment_2d

copies them into ``book/paper_results/`` after checking that they come from a paper-profile run
with a known commit and recorded source hashes. The chapter shows them beside its live smoke run
(:func:`load_paper_results`) under a provenance line (:func:`provenance_text`): date, device,
commit, and whether any source the numbers depend on has changed since
(:mod:`support.infra.provenance`).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .profiles import get_profile
from .provenance import REPO_ROOT, changed_since_run, result_chapters, results_sources
from .results import atomic_write, results_dir

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

    The new figures are written before the stale ones are removed and the results file last, each
    atomically, so a failure part-way leaves the previous export's results file in place.

    Raises
    ------
    FileNotFoundError
        If the results file is missing (run the chapter with ``BOOK_PROFILE=paper``).
    ValueError
        If the run was not a paper-profile run, or its commit or source hashes are unknown (no provenance).
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
    if "sources" not in metadata:
        raise ValueError(f"{source}/{name}.json records no source hashes: re-run it with this version of the book")
    figure_dir = Path(target) / name
    written = []
    for figure in figures:
        destination = figure_dir / figure.name
        atomic_write(destination, lambda tmp, figure=figure: shutil.copyfile(figure, tmp))
        written.append(destination)
    for stale in set(figure_dir.glob("*.png")) - set(written):
        stale.unlink()
    destination = Path(target) / f"{name}.json"
    atomic_write(destination, lambda tmp: shutil.copyfile(Path(source) / f"{name}.json", tmp))
    return [destination, *written]


def load_paper_results(name: str, folder: Path = PAPER_RESULTS_DIR) -> PaperResults | None:
    """The committed paper-profile run ``name`` in ``folder``, or None if none has been committed."""
    if not (Path(folder) / f"{name}.json").exists():
        return None
    payload, figures = _read(name, folder)
    return PaperResults(payload["metadata"], payload["results"], tuple(figures))


def provenance_text(name: str, paper: PaperResults, root: Path = REPO_ROOT) -> str:
    """One Markdown sentence for a page: when, where and from which commit the committed run ``name``
    came, and whether the sources its numbers depend on have changed since (naming them if so)."""
    meta = paper.metadata
    text = (f"Paper-profile run of {meta['date'][:10]} on {meta['device']}, torch {meta['torch']}, seed "
            f"{meta['seed']}, commit `{meta['commit'][:12]}`.")
    now = results_sources(name, root, meta["profile"])
    if now is None or "sources" not in meta:
        return text + " Its sources were not recorded: the numbers are those of that commit."
    changed = changed_since_run(meta["sources"], meta["commit"], now, meta["profile"], root)
    if not changed:
        return text + " None of the sources its numbers depend on has changed since."
    return (text + " **The code has changed since that run** (" + ", ".join(f"`{c}`" for c in changed)
            + "): the numbers below are those of that commit, not necessarily of this page's code.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Commit a paper-profile run's results and figures beside the book.")
    parser.add_argument("name", help="results name: one of " + ", ".join(result_chapters()))
    parser.add_argument("--source", type=Path, default=None, help="default: the paper profile's results folder")
    parser.add_argument("--target", type=Path, default=PAPER_RESULTS_DIR)
    args = parser.parse_args(argv)
    source = args.source or results_dir(get_profile("paper"))
    for path in export_paper_results(args.name, source, args.target):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
