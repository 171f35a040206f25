"""The browser check finds what a reader would see broken (needs Debian's chromium; skipped without it)."""

import shutil
from pathlib import Path

import pytest

from support.infra.browser_check import PageReport, check_site

PAGE = """<!DOCTYPE html><html><head><title>t</title></head><body>
<p>Typeset nothing here: <span class="math notranslate nohighlight">\\(a^2\\)</span></p>
<img src="missing.png"><table><tr><th>header only</th></tr></table>
<script>throw new Error("boom")</script></body></html>"""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium on PATH (apt-get install chromium)")
def test_a_broken_page_is_reported_with_every_problem(tmp_path: Path):
    (tmp_path / "html").mkdir()
    (tmp_path / "html" / "index.html").write_text(PAGE)
    (report,) = check_site(tmp_path / "html")
    assert report.untypeset and report.raw_tex  # no MathJax on the page: the math stays TeX
    assert report.broken_images == ["missing.png"] and report.empty_tables == 1
    assert any("boom" in error for error in report.errors)  # the uncaught exception
    assert any("missing.png" in error for error in report.errors)  # and the failed load, as the console logs it
    assert len(report.problems) == 6 and Path(report.screenshot).stat().st_size > 1000


def test_a_clean_report_has_no_problems():
    assert PageReport("index.html", math=3, images=1).problems == []
