"""Every relative link of the README and docs/ reaches a file of the checkout and, with ``#anchor``, a
heading of that file (GitHub's anchors: lower case, punctuation dropped, spaces as hyphens). Moving a
module renames the headings that name its path (issue 26's folders broke one README link)."""

from __future__ import annotations

import re
from pathlib import Path

from xlt import PROJECT_ROOT

LINK = re.compile(r"\]\(([^)\s#]*)(?:#([^)\s]+))?\)")


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {github_anchor(line.lstrip("#")) for line in lines if line.startswith("#")}


def broken_links(pages: list[Path]) -> list[str]:
    broken = []
    for page in pages:
        for target, anchor in LINK.findall(page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path = (page.parent / target).resolve() if target else page
            where = f"{page.relative_to(PROJECT_ROOT)}: ({target}{'#' + anchor if anchor else ''})"
            if not path.exists():
                broken.append(f"{where}: no such file")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{where}: no such heading")
    return broken


def test_every_relative_link_of_the_docs_reaches_its_file_and_heading() -> None:
    pages = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
    assert len(pages) > 10
    assert broken_links(pages) == []


def test_the_check_finds_a_missing_heading_and_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("tests.test_doc_links.PROJECT_ROOT", tmp_path)
    (tmp_path / "b.md").write_text("# SIGTERM on several ranks (xlt/training/preemption.py)\n")
    page = tmp_path / "a.md"
    page.write_text(
        "[ok](b.md#sigterm-on-several-ranks-xlttrainingpreemptionpy) [old](b.md#sigterm-on-several-ranks-xltpreemptionpy)"
        " [gone](c.md) [web](https://example.org/x.md#y)\n"
    )
    assert broken_links([page]) == [
        "a.md: (b.md#sigterm-on-several-ranks-xltpreemptionpy): no such heading",
        "a.md: (c.md): no such file",
    ]
