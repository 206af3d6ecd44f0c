"""``python -m xlt.results`` on the committed fixtures prints exactly the committed text (issue 26:
a restructuring keeps every printed line, exit status and stderr line byte for byte).

The golden files were written by the code before the split of ``xlt.results.__main__._main`` into
report sections (xlt/results/sweep_report.py). A deliberate change of the report rewrites them:
``XLT_WRITE_GOLDEN=1 pytest tests/test_results_golden.py``; review the diff before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xlt.results.__main__ import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "results"
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "results_golden"
CASES = {
    "toy_sweep": ["toy_sweep", "--no-plots"],
    "toy_sweep_dev": ["toy_sweep", "--split", "dev", "--no-plots", "--strict"],
    "multi_target_published": ["multi_target", "toy_sweep", "--published", "xtreme", "--no-plots"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_report_is_byte_identical_to_the_golden_text(case: str, tmp_path: Path, capsys) -> None:
    argv = [str(FIXTURES / a) if (FIXTURES / a).is_dir() else a for a in CASES[case]]
    rc = main([*argv, "--out", str(tmp_path / "analysis")])
    out, err = capsys.readouterr()
    text = f"exit {rc}\n--- stdout\n{out}--- stderr\n{err}"
    text = text.replace(str(tmp_path), "<out>").replace(str(FIXTURES), "<fixtures>")
    golden = GOLDEN / f"{case}.txt"
    if os.environ.get("XLT_WRITE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")
