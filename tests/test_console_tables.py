"""One table library (tabulate, through ``xlt.utils.console.text_table``) for every printed table, and one
parser helper (``xlt.utils.console.cli_parser``) for every CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xlt.utils.console import RULE, cli_parser, text_table

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "xlt").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")])


def test_markdown_table_is_github_markdown_with_cells_as_given() -> None:
    text = text_table(
        ["lang", "acc", "n"],
        [["en", "0.10", 5010], ["de", "1e3", None], RULE],
        align=["left", "right", "right"],
    )
    lines = text.splitlines()
    assert lines[0] == "| lang |  acc |    n |"
    assert lines[1] == "|:-----|-----:|-----:|"  # one rule, under the header; RULE rows dropped
    assert lines[2:] == ["| en   | 0.10 | 5010 |", "| de   |  1e3 |      |"]  # "0.10" not reparsed to 0.1


def test_a_pipe_inside_a_markdown_cell_is_escaped() -> None:
    """``languages`` of seeds that differ are joined with " | " (xlt/results/stats.py): one cell."""
    text = text_table(["languages"], [["de,en | de,en,sw"]])
    assert text.splitlines()[2] == r"| de,en \| de,en,sw |"


def test_plain_table_draws_the_rule_again_above_the_aggregates() -> None:
    text = text_table(
        ["lang", "acc"],
        [["en", "80.00"], ["de", "70.00"], RULE, ["avg", "75.00"]],
        "plain",
        ["left", "right"],
        indent="  ",
    )
    assert text.splitlines() == [
        "  lang    acc",
        "  ----  -----",
        "  en    80.00",
        "  de    70.00",
        "  ----  -----",
        "  avg   75.00",
    ]


def test_an_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError, match="text_table style 'grid': expected 'markdown' or 'plain'"):
        text_table(["a"], [["1"]], "grid")


def test_cli_parser_prints_its_examples_after_the_options(capsys) -> None:
    parser = cli_parser("python -m xlt.demo", "Do one thing.", ["xlt-demo a   # the first", "xlt-demo b"])
    parser.add_argument("--flag", help="a flag")
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m xlt.demo")
    assert (
        out.index("Do one thing.")
        < out.index("  --flag FLAG  a flag")
        < out.index("examples:\n  xlt-demo a   # the first\n  xlt-demo b")
    )


def test_every_cli_builds_its_parser_with_cli_parser() -> None:
    """The package's CLIs say prog, description and examples through one helper (benchmarks/ are not CLIs)."""
    clis = [p for p in SOURCES if "benchmarks" not in p.parts and p.parts[-2:] != ("utils", "console.py")]
    direct = [str(p.relative_to(ROOT)) for p in clis if "ArgumentParser(" in p.read_text()]
    assert direct == [], f"build the parser with xlt.utils.console.cli_parser: {direct}"


HAND_DRAWN = re.compile(r"""["']\|---|-\+-|\.ljust\(|\.rjust\(""")


def test_no_printed_table_is_drawn_by_hand() -> None:
    """Markdown rules, ``-+-`` rules and ljust/rjust columns belong to xlt.utils.console.text_table."""
    found = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in SOURCES
        if p.parts[-2:] != ("utils", "console.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if HAND_DRAWN.search(line)
    ]
    assert found == [], f"print these tables with xlt.utils.console.text_table: {found}"
