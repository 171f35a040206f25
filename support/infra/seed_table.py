"""Which checked claims of the book hold under other seeds: ``python -m support.infra.seed_table``.

A *claim* is a code cell of a chapter that asserts something (an ``assert``, or a call of one of the
chapter's ``check_...`` functions, which assert the claims on a results dict) and is either hidden (tagged
``remove-cell``) or the code of an exercise's solution (between ``{solution-start}`` and
``{solution-end}``); the solution's claim is labelled with its exercise's title. For every seed
this runs the chosen chapters through nbval with ``BOOK_SEED`` set (the smoke profile unless
``BOOK_PROFILE`` says otherwise), reads each cell's outcome from pytest's JUnit XML and prints one row per claim: chapter, cell, the cell's first comment line, and held / FAILED per seed.
A cell after a failed one may fail only because the failure stopped the chapter's state short; the
table marks the first failure of a chapter and seed with ``FAILED`` and later ones with ``failed*``.

Each seed writes its own build folder (``_build/<profile>-seed<n>``), so the default seed's results
and checkpoints are never touched.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .results import REPO_ROOT, atomic_write_text, markdown_table

DEFAULT_SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Claim:
    chapter: str
    cell: int
    """nbval's number of the code cell (0-based, code cells only)."""
    label: str


EXERCISE = re.compile(r"```\{exercise\}\s*(?P<title>[^\n]*)\n(?:(?!```).*\n)*?:label:\s*(?P<label>\S+)")
"""An exercise directive's title and its label (searched only up to the directive's closing fence)."""
SOLUTION_MARK = re.compile(r"```\{solution-(?P<mark>start|end)\}\s*(?P<label>\S*)")
CHECK_CALL = re.compile(r"\bcheck_\w+\(")
"""A call of a chapter's claim-checking function (``check_claims(results)``)."""


def chapter_claims(chapter: Path) -> list[Claim]:
    """The claims of a jupytext chapter: hidden assert cells labelled by their first comment line,
    and exercise solutions' assert cells labelled ``exercise: <its title>``."""
    import jupytext

    claims, number, titles, solution = [], 0, {}, None
    for cell in jupytext.read(chapter).cells:
        if cell.cell_type == "markdown":
            titles.update((m["label"], m["title"].strip()) for m in EXERCISE.finditer(cell.source))
            for mark in SOLUTION_MARK.finditer(cell.source):  # in page order: the last one says where we are
                solution = mark["label"] if mark["mark"] == "start" else None
            continue
        if cell.cell_type != "code":
            continue
        if "assert" in cell.source or CHECK_CALL.search(cell.source):
            if "remove-cell" in cell.metadata.get("tags", []):
                comments = [line.strip().lstrip("#").strip() for line in cell.source.splitlines() if line.strip().startswith("#")]
                claims.append(Claim(chapter.name, number, comments[0] if comments else cell.source.splitlines()[0]))
            elif solution is not None:
                claims.append(Claim(chapter.name, number, f"exercise: {titles.get(solution, solution)}"))
        number += 1
    return claims


def run_seed(seed: int, chapters: list[Path], workers: int, report: Path) -> dict[tuple[str, int], str]:
    """Run the chapters under ``BOOK_SEED=seed``; (chapter, cell) -> ``passed``/``failed``/``skipped``."""
    env = {**os.environ, "BOOK_SEED": str(seed)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", str(report),
               *(["-n", str(workers), "--dist", "loadscope"] if workers > 1 else []), *map(str, chapters)]
    print(f"seed {seed}: {' '.join(command[2:])}", flush=True)
    report.unlink(missing_ok=True)
    subprocess.run(command, cwd=REPO_ROOT, env=env, check=False)
    if not report.exists():
        raise RuntimeError(f"pytest wrote no report for seed {seed}: see its output above")
    return read_report(report, chapters)


def read_report(report: Path, chapters: list[Path]) -> dict[tuple[str, int], str]:
    """Outcomes of nbval's cell items in a JUnit XML report: (chapter file name, cell) -> outcome."""
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name", "")
        # nbval's classname is the chapter's path with dots, e.g. "book.10_likelihood.md"
        chapter = next((c.name for c in chapters if case.get("classname", "").endswith(c.name)), None)
        if chapter is None or not name.startswith("Cell "):
            continue
        result = "passed"
        if case.find("failure") is not None or case.find("error") is not None:
            result = "failed"
        elif case.find("skipped") is not None:
            result = "skipped"
        outcomes[(chapter, int(name.split()[1]))] = result
    return outcomes


def seed_table(claims: list[Claim], outcomes: dict[int, dict[tuple[str, int], str]]) -> tuple[str, int]:
    """The markdown table claim x seed, and how many claims failed under at least one seed."""
    first_failure = {
        (seed, chapter): min((cell for (ch, cell), r in found.items() if ch == chapter and r == "failed"), default=None)
        for seed, found in outcomes.items() for chapter in {c.chapter for c in claims}
    }
    rows, failing = [], 0
    for claim in claims:
        marks = []
        for seed, found in outcomes.items():
            result = found.get((claim.chapter, claim.cell), "not run")
            if result == "failed":
                result = "FAILED" if first_failure[(seed, claim.chapter)] == claim.cell else "failed*"
            elif result == "passed":
                result = "held"
            marks.append(result)
        failing += any(m.lower().startswith("failed") for m in marks)
        rows.append([claim.chapter.removesuffix(".md"), str(claim.cell), claim.label.replace("|", "/")[:90], *marks])
    header = ["chapter", "cell", "claim (first comment line)", *(f"seed {s}" for s in outcomes)]
    return markdown_table(header, rows), failing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--chapters", type=Path, nargs="+", default=None,
                        help="chapter files (default: every book/NN_*.md)")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (chapters run whole on one)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "_build" / "seed_table.md")
    args = parser.parse_args(argv)
    if any(seed < 0 for seed in args.seeds):
        parser.error("seeds must be non-negative integers")
    chapters = [c.resolve() for c in args.chapters] if args.chapters else sorted((REPO_ROOT / "book").glob("[0-9][0-9]_*.md"))
    missing = [str(c) for c in chapters if not c.is_file()]
    if missing:
        parser.error(f"no such chapter: {', '.join(missing)}")
    claims = [claim for chapter in chapters for claim in chapter_claims(chapter)]
    reports = args.out.parent / "seed_table_reports"
    reports.mkdir(parents=True, exist_ok=True)
    outcomes = {seed: run_seed(seed, chapters, args.workers, reports / f"seed{seed}.xml") for seed in args.seeds}
    table, failing = seed_table(claims, outcomes)
    atomic_write_text(table + "\n", args.out)
    print(table)
    print(f"\n{len(claims) - failing} of {len(claims)} claims held for every seed {args.seeds}; table in {args.out}")
    return 1 if failing else 0


if __name__ == "__main__":
    raise SystemExit(main())
