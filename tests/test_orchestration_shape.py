"""Issue 26: the orchestration reads as composed parts in one folder; its modules and the ones it
owns beside it (Trainer, callbacks, strategies, xlt.evaluate) stay small and formatter-friendly, and
each of their facts is written once."""

from __future__ import annotations

import ast
import re

from xlt import PROJECT_ROOT

XLT = PROJECT_ROOT / "xlt"
ORCHESTRATION = sorted((XLT / "orchestration").glob("*.py"))
OWNED = [
    *ORCHESTRATION,
    *(XLT / name for name in ("trainer.py", "callbacks.py", "strategies.py", "evaluate.py")),
]


def test_orchestration_lives_in_its_folder() -> None:
    names = {p.stem for p in ORCHESTRATION}
    assert {"plan", "run", "session", "stage", "intermediate", "weights", "reuse", "rundir"} <= names
    for moved in ("run", "stage", "intermediate", "reuse", "rundir"):  # top level: command lines only
        assert not (XLT / f"{moved}.py").exists(), f"xlt/{moved}.py belongs in xlt/orchestration/"


def test_no_module_over_400_lines_no_function_over_60() -> None:
    long_modules, long_functions = [], []
    for path in OWNED:
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 400:
            long_modules.append(path.name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 60:
                    long_functions.append(
                        f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {node.name} ({length})"
                    )
    assert not long_modules and not long_functions, (long_modules, long_functions)


def test_no_fmt_skip_in_the_orchestration() -> None:
    marked = [str(p.relative_to(PROJECT_ROOT)) for p in OWNED if "fmt: skip" in p.read_text(encoding="utf-8")]
    assert not marked


def test_facts_written_once() -> None:
    """One git helper, one constant named STATE_FILE, one list of result-neutral keys."""
    sources = {p: p.read_text(encoding="utf-8") for p in XLT.rglob("*.py")}
    rev_parse = [p.name for p, text in sources.items() if '"rev-parse"' in text]
    assert rev_parse == ["reuse.py"]
    state_files = [p.name for p, text in sources.items() if re.search(r"^STATE_FILE\s*=", text, re.M)]
    assert state_files == ["rundir.py"]
    neutral = [
        p.name for p, text in sources.items() if re.search(r"^_?[A-Z_]*NEUTRAL[A-Z_]*\s*=", text, re.M)
    ]
    assert neutral == ["config_lock.py"]
