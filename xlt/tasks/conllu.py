"""CoNLL-U sentences and XTREME's fusion of multi-word tokens (UD-POS): the structural checks every
reader of a CoNLL-U file relies on (token ids counting 1, 2, ..., sentence breaks, heads inside the
sentence, well-formed multi-word ranges), each refused in one line naming the file and line."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from xlt.tasks.rawio import open_text
from xlt.tasks.spec import DataError

Row = tuple[int, list[str]]  # (line number, the 10 CoNLL-U columns)


def conllu_sentences(path: Path) -> Iterator[list[Row]]:
    rows: list[Row] = []
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                if rows:
                    yield rows
                rows = []
            elif line.startswith("#"):
                if rows:  # comments start a sentence: a token line before one means a lost blank line
                    raise DataError(
                        f"{path}:{lineno}: a comment line inside a sentence (expected a blank line "
                        "between the sentence above and this one)"
                    )
            else:
                parts = line.split("\t")
                if len(parts) != 10:
                    raise DataError(
                        f"{path}:{lineno}: expected 10 tab-separated CoNLL-U columns, got {len(parts)}"
                    )
                rows.append((lineno, parts))
    if rows:
        yield rows


def _ancestors(node: int, parents: Mapping[int, set[int]]) -> int:
    """networkx ``len(ancestors(G, node))``: nodes with a path to ``node``, ``node`` itself excluded."""
    seen: set[int] = set()
    stack = list(parents.get(node, ()))
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(parents.get(n, ()))
    seen.discard(node)
    return len(seen)


def _span_head(
    span: list[int], parents: Mapping[int, set[int]], upos: Mapping[int, str], precedence: Sequence[str]
) -> int:
    """lib/conll.py ``_choose_spanhead_from_heuristics``: the unique highest sub-token, else the
    first of the highest whose UPOS ranks best in ``precedence``."""
    depth = [_ancestors(x, parents) for x in span]
    highest = [x for x, d in zip(span, depth, strict=True) if d == min(depth)]
    if len(highest) == 1:
        return highest[0]
    rank = {tag: i for i, tag in enumerate(precedence)}
    best, best_rank = highest[0], len(precedence) + 1
    for x in highest:
        r = rank.get(upos[x], len(precedence))
        if r < best_rank:
            best, best_rank = x, r
    return best


def fuse(rows: list[Row], precedence: Sequence[str], path: Path) -> tuple[list[str], list[str], int]:
    """Words and UPOS tags of one sentence after XTREME's fused-form replacement."""
    forms: dict[int, str] = {}
    upos: dict[int, str] = {}
    parents: dict[int, set[int]] = defaultdict(set)
    spans: list[tuple[int, int, str, int]] = []
    line_of: dict[int, int] = {}
    for lineno, cols in rows:
        tid = cols[0]
        try:
            if "." in tid:
                continue  # empty node (enhanced UD); the conversion skips it
            if "-" in tid:
                first, last = (int(x) for x in tid.split("-"))
                spans.append((first, last, cols[1], lineno))
                continue
            i = int(tid)
            if cols[6] != "_":
                parents[i].add(int(cols[6]))
        except ValueError:
            raise DataError(f"{path}:{lineno}: bad token id or head ({tid!r}, {cols[6]!r})") from None
        if i in line_of:  # a word would be dropped (forms keyed by id), or two sentences run together
            hint = " (a missing blank line between two sentences?)" if i == 1 else ""
            raise DataError(f"{path}:{lineno}: token id {i} repeats line {line_of[i]}{hint}")
        if i != len(line_of) + 1:
            raise DataError(
                f"{path}:{lineno}: token id {i} where {len(line_of) + 1} was expected (ids count 1, 2, ...)"
            )
        line_of[i] = lineno
        forms[i], upos[i] = cols[1], cols[3]
        if cols[8] != "_":
            for arc in cols[8].split("|"):
                arc_head = arc.split(":")[0]
                if arc_head.isdigit():
                    parents[i].add(int(arc_head))
    replaced: dict[int, str] = {}
    removed: set[int] = set()
    for head_line, cols in rows:
        head_id = cols[6]
        if head_id.isdigit() and int(head_id) > len(line_of):
            raise DataError(
                f"{path}:{head_line}: head {head_id} is not a token of the sentence ({len(line_of)} tokens)"
            )
    for first, last, form, lineno in spans:
        if last <= first:
            raise DataError(f"{path}:{lineno}: multi-word token {first}-{last}: expected first < last")
        span = list(range(first, last + 1))
        if any(x not in forms for x in span):
            raise DataError(f"{path}:{lineno}: multi-word token {first}-{last} covers missing token ids")
        head = _span_head(span, parents, upos, precedence)
        replaced[head] = form
        removed.update(x for x in span if x != head)
    kept = [i for i in sorted(forms) if i not in removed]
    return [replaced.get(i, forms[i]) for i in kept], [upos[i] for i in kept], rows[0][0]
