"""Markdown tables as the tests compare them: the padding xlt.utils.console.text_table adds taken out."""

from __future__ import annotations

import re


def md(text: str) -> str:
    """``text`` with each markdown table row written ``| a | b |`` (one space each side of a cell,
    an empty cell ``|  |``) and each rule ``|---|---|``; other lines unchanged."""
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|") and stripped.endswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", stripped[1:-1])]
            if all(re.fullmatch(r":?-+:?", c) for c in cells):
                cells = ["---"] * len(cells)
                line = "|" + "|".join(cells) + "|"
            else:
                line = "| " + " | ".join(cells) + " |"
        out.append(line)
    return "\n".join(out)
