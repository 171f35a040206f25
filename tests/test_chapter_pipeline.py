"""The chapter-as-test pipeline: jupytext chapters run through nbval, and a failing assert fails.

Runs pytest in a subprocess on small throw-away chapters, with this repository's conftest.py.
"""

from pathlib import Path

import pytest
import yaml

from chapter_header import JUPYTEXT_HEADER

ROOT = Path(__file__).resolve().parents[1]

CHAPTER = JUPYTEXT_HEADER + """# A chapter

```{{code-cell}} ipython3
value = 1 + 1
```

```{{code-cell}} ipython3
:tags: [remove-cell]

assert value == {expected}, "the chapter's claim"
```
"""


@pytest.fixture
def run_chapters(pytester: pytest.Pytester):
    pytester.makeconftest((ROOT / "conftest.py").read_text())

    def run(**chapters: str) -> pytest.RunResult:
        for name, text in chapters.items():
            (pytester.path / f"{name}.md").write_text(text)
        return pytester.runpytest_subprocess("--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider")

    return run


def test_a_failing_hidden_assert_fails_the_suite(run_chapters):
    result = run_chapters(good=CHAPTER.format(expected=2), broken=CHAPTER.format(expected=3))
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError*the chapter's claim*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_plain_markdown_is_not_collected(run_chapters):
    result = run_chapters(page="# Just text\n\nNo front matter, no kernel.\n")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_markdown_outputs_render_as_myst_so_result_tables_are_tables():
    """Chapters show their results with display(Markdown(markdown_table(...))). myst-nb renders such
    outputs as CommonMark by default, which has no tables: every table came out as a paragraph of pipes."""
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["config"]["nb_render_markdown_format"] == "myst"


def test_chapter_cells_may_run_as_long_as_in_the_book_build(pytestconfig):
    """nbval's default 2000 s per cell interrupted chapter 8's paper-profile geodesics; make book allows 7200 s."""
    book_timeout = yaml.safe_load((Path(__file__).parents[1] / "_config.yml").read_text())["execute"]["timeout"]
    assert pytestconfig.option.nbval_cell_timeout == book_timeout
