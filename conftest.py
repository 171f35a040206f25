"""Collect the book's jupytext MyST-markdown chapters as nbval notebooks.

nbval 0.11 collects ``*.ipynb`` only. Under ``--nbval``/``--nbval-lax`` this hook also claims
``.md`` files whose front matter declares a ``kernelspec`` (i.e. jupytext notebooks) and hands
them to nbval's own collector, with ``nbformat.read`` swapped for ``jupytext.read`` while the
file is read. Every code cell then runs as a test item; a failing hidden ``assert`` cell fails
the suite. Plain markdown pages (no kernelspec) are not collected.
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import jupytext
import nbformat
import pytest
from nbval.plugin import IPyNbFile


# Under pytest-xdist every worker (and every chapter kernel it starts, which inherits the
# environment) gets one intra-op thread: with -n 2 on 2 cores, two workers with two OpenMP
# threads each spin-wait against each other: a fresh-clone `.ci/run` took 24m47s (45 min of user
# CPU time) that way and 7m17s (10 min) with one thread each.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


CELL_TIMEOUT_SECONDS = 7200.0
"""A chapter cell may run as long as under ``make book`` (``_config.yml``, ``execute.timeout``). nbval's own
default of 2000 s interrupted the paper profile of chapter 8 in its 1,000 geodesics."""


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("nbval_cell_timeout", default=None) == 2000:  # nbval's default, not asked for
        config.option.nbval_cell_timeout = CELL_TIMEOUT_SECONDS


def _is_jupytext_notebook(path: Path) -> bool:
    if path.suffix != ".md":
        return False
    head = path.read_text(encoding="utf-8").split("\n---", 1)[0]
    return head.startswith("---") and "\nkernelspec:" in head


OUTPUT_TIMEOUT_SECONDS = 120
"""How long nbval waits for a cell's next output message once the cell has finished. nbval fixes this at
5 s; on a loaded machine (a CI run beside other jobs) a kernel may take longer to deliver a large output
such as a table after minutes of training, and nbval then fails the cell and marks every later cell of the
chapter as an expected failure. Measured here: chapter 13's training cell, with four other jobs on two cores."""


class JupytextMarkdownFile(IPyNbFile):
    """nbval's notebook collector, reading a jupytext ``.md`` notebook."""

    def collect(self):
        def read(path, as_version, **kwargs):
            return jupytext.read(path, as_version=as_version)

        with mock.patch.object(nbformat, "read", read):
            for cell in super().collect():
                cell.output_timeout = OUTPUT_TIMEOUT_SECONDS
                yield cell


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    opt = parent.config.option
    if (opt.nbval or opt.nbval_lax) and _is_jupytext_notebook(file_path):
        return JupytextMarkdownFile.from_parent(parent, path=file_path)
    return None
