"""The seed-table command's parts: claims found in a chapter, outcomes read from JUnit XML, the table."""

from pathlib import Path

from chapter_header import JUPYTEXT_HEADER
from support.infra.seed_table import Claim, chapter_claims, read_report, seed_table

CHAPTER = JUPYTEXT_HEADER + """# A chapter

```{code-cell} ipython3
x = 1
```

```{code-cell} ipython3
:tags: [remove-cell]

# x is one
assert x == 1
```

Some prose.

```{code-cell} ipython3
:tags: [remove-cell]

y = 2  # hidden, but no claim
```

```{code-cell} ipython3
:tags: [remove-cell]

assert x + 1 == 2
```

```{code-cell} ipython3
:tags: [remove-cell]

# the claims on a results dict
check_claims({"x": x})
```

```{code-cell} ipython3
:tags: [remove-cell]

z = recheck_x(x)  # not a check_ function: no claim
```
"""

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="book.07_x.md" name="Cell 0" time="0.1" />
<testcase classname="book.07_x.md" name="Cell 1" time="0.1"><failure message="boom">boom</failure></testcase>
<testcase classname="book.07_x.md" name="Cell 3" time="0.1"><failure message="boom">boom</failure></testcase>
<testcase classname="tests.test_other" name="test_something" time="0.1" />
</testsuite></testsuites>
"""


def test_claims_are_hidden_assert_cells_numbered_as_nbval_numbers_code_cells(tmp_path: Path) -> None:
    chapter = tmp_path / "07_x.md"
    chapter.write_text(CHAPTER)
    assert chapter_claims(chapter) == [Claim("07_x.md", 1, "x is one"), Claim("07_x.md", 3, "assert x + 1 == 2"),
                                       Claim("07_x.md", 4, "the claims on a results dict")]


def test_report_and_table_mark_the_first_failure_of_a_chapter(tmp_path: Path) -> None:
    chapter = tmp_path / "07_x.md"
    chapter.write_text(CHAPTER)
    report = tmp_path / "seed1.xml"
    report.write_text(REPORT)
    failed = read_report(report, [chapter])
    assert failed == {("07_x.md", 0): "passed", ("07_x.md", 1): "failed", ("07_x.md", 3): "failed"}
    held = {key: "passed" for key in failed}
    table, failing = seed_table(chapter_claims(chapter), {0: held, 1: failed})
    assert failing == 2
    lines = table.splitlines()
    assert lines[2].endswith("| held | FAILED |") and lines[3].endswith("| held | failed* |")


EXERCISES = JUPYTEXT_HEADER + """# A chapter with exercises

```{code-cell} ipython3
x = 1
```

```{exercise} Show that x is one
:label: ex-one

Check it.
```

```{solution-start} ex-one
:class: dropdown
```

It is.

```{code-cell} ipython3
assert x == 1
```

```{solution-end}
```

```{exercise} Add one
:label: ex-two
```

```{solution-start} ex-two
:class: dropdown
```

```{code-cell} ipython3
assert x + 1 == 2
```

```{solution-end}
```

```{code-cell} ipython3
assert x > 0  # a visible sanity check outside any solution: no claim
```
"""


def test_exercise_solutions_that_assert_are_claims_labelled_by_their_exercise(tmp_path: Path) -> None:
    chapter = tmp_path / "03_x.md"
    chapter.write_text(EXERCISES)
    assert chapter_claims(chapter) == [Claim("03_x.md", 1, "exercise: Show that x is one"),
                                       Claim("03_x.md", 2, "exercise: Add one")]
