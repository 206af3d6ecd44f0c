"""No module of the package is over 500 lines (issue 16): a file that grows past it is split by concern."""

from __future__ import annotations

from xlt import PROJECT_ROOT

LIMIT = 500


def test_no_module_over_500_lines() -> None:
    sizes = {
        str(path.relative_to(PROJECT_ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted((PROJECT_ROOT / "xlt").rglob("*.py"))
    }
    assert len(sizes) > 50  # the package was found
    too_long = {name: n for name, n in sizes.items() if n > LIMIT}
    assert not too_long, f"modules over {LIMIT} lines: {too_long}"
