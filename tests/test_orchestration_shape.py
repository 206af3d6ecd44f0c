"""Issue 26: the orchestration reads as composed parts in one folder; its modules and the ones it
owns beside it (Trainer, callbacks, strategies, xlt.evaluate) stay small and formatter-friendly, and
each of their facts is written once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from xlt import PROJECT_ROOT

XLT = PROJECT_ROOT / "xlt"
ORCHESTRATION = sorted((XLT / "orchestration").glob("*.py"))
OWNED = [
    *ORCHESTRATION,
    *(XLT / "training" / name for name in ("trainer.py", "callbacks.py", "strategies.py")),
    XLT / "evaluate.py",
]


def test_orchestration_lives_in_its_folder() -> None:
    names = {p.stem for p in ORCHESTRATION}
    assert {"plan", "run", "session", "stage", "intermediate", "weights", "reuse", "rundir"} <= names
    for moved in ("run", "stage", "intermediate", "reuse", "rundir"):  # top level: command lines only
        assert not (XLT / f"{moved}.py").exists(), f"xlt/{moved}.py belongs in xlt/orchestration/"


# xlt/ itself: the command lines (python -m xlt.train, evaluate, export, score, with the readers and
# writers only they use) and the config layer every command validates with; the rest lives in a package
# named for its layer (orchestration, training, tasks, data, modeling, metrics, evaluation, results, audit,
# plan, e5, utils).
TOP_LEVEL = {
    "__init__",
    "train",
    "evaluate",
    "export",
    "export_hub",
    "score",
    "score_files",
    "config",
    "schema",
    "checks",
    "checks_trainer",
    "public_config",
}


def test_the_top_level_holds_command_lines_and_the_config_layer_only() -> None:
    assert {p.stem for p in XLT.glob("*.py")} == TOP_LEVEL


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


# -- issue 26: nothing after planning reads the config ---------------------------------------------

# Where the validated DictConfig may still be read: planning (plan.py, plan_sections.py), the one
# function that validates and plans (run.run), the adapter that hands the plan's model section to
# xlt.modeling.encoder (session._model_section), and the config lock, which reads the stored
# config.yaml (config_lock.py; it compares the plan's ConfigRecord with it).
PLANNING = {"plan.py", "plan_sections.py", "frozen.py"}
ALLOWED = {("run.py", "run"), ("session.py", "_model_section"), ("config_lock.py", "*")}
CONFIG_NAMES = {"DictConfig", "ListConfig", "OmegaConf"}


def config_reads(path: Path) -> list[str]:
    """Each place in ``path`` that reads a config: a name ``cfg`` or ``*_cfg``, an attribute ``.cfg``,
    or DictConfig/ListConfig/OmegaConf, outside :data:`ALLOWED` functions; ``file:line what``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        allowed = (path.name, function) in ALLOWED or (path.name, "*") in ALLOWED
        what = None
        if isinstance(node, ast.Name) and (node.id == "cfg" or node.id.endswith("_cfg")):
            what = node.id
        elif isinstance(node, ast.arg) and (node.arg == "cfg" or node.arg.endswith("_cfg")):
            what = node.arg
        elif isinstance(node, ast.Attribute) and node.attr == "cfg":
            what = ".cfg"
        elif isinstance(node, ast.Name) and node.id in CONFIG_NAMES:
            what = node.id
        elif isinstance(node, ast.ImportFrom) and node.module == "omegaconf":
            what = "import omegaconf"
        if what and not allowed and not isinstance(node, ast.ImportFrom):
            found.append(f"{path.name}:{node.lineno} {function or '<module>'}: {what}")
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "")
    return found


def executors(root: Path) -> list[Path]:
    """The modules that execute a plan: xlt/orchestration/ but planning, and the Trainer and loggers."""
    folder = sorted((root / "xlt" / "orchestration").glob("*.py"))
    return [p for p in folder if p.name not in PLANNING] + [
        root / "xlt" / "training" / "trainer.py",
        root / "xlt" / "training" / "loggers.py",
    ]


def test_nothing_after_planning_reads_the_config() -> None:
    """Issue 26: the executors (session, stage, intermediate, run, weights, rundir, reuse, the Trainer,
    the loggers) get plan pieces, never the DictConfig; on the code before this change it lists
    session.cfg, build_trainer(cfg, ...), build_logger(cfg, ...), cfg.optim, the reuse key's
    to_container(self.s.cfg) and more."""
    reads = [line for path in executors(PROJECT_ROOT) for line in config_reads(path)]
    assert not reads, "\n".join(reads)


def test_evaluate_reads_no_config_after_planning() -> None:
    """xlt.evaluate builds its evaluation-only plan, then uses only the plan."""
    tree = ast.parse((XLT / "evaluate.py").read_text(encoding="utf-8"))
    (function,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "evaluate"]
    planned = min(
        n.lineno
        for n in ast.walk(function)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "build_plan"
    )
    after = [
        n.lineno
        for n in ast.walk(function)
        if isinstance(n, ast.Name) and n.id == "cfg" and n.lineno > planned
    ]
    assert not after, f"xlt/evaluate.py reads cfg after build_plan at lines {after}"


def test_the_plan_prints_its_sections_and_carries_the_public_config(compose_cfg, tmp_path: Path) -> None:
    """+show=plan's text (format_plan) holds the new sections, not the config record; the record is
    what config.yaml and the W&B run config held before (public_yaml / public_container of cfg)."""
    from omegaconf import OmegaConf

    from xlt.config import validate
    from xlt.orchestration.plan import build_plan, evaluation_only, format_plan
    from xlt.public_config import public_container, public_yaml
    from xlt.schema import to_container
    from xlt.utils.frozen import thaw

    cfg = validate(compose_cfg("model=tiny", "+target=xnli", "+intermediate=mnli", "logger=wandb"))
    plan = build_plan(cfg, tmp_path)
    shown = OmegaConf.to_container(OmegaConf.create(format_plan(plan)))
    assert isinstance(shown, dict)
    sections = ("encoder", "scale", "optim", "trainer", "logger", "data", "rows", "audit", "local_files")
    assert set(sections) <= set(shown) and "config" not in shown
    assert shown["logger"]["kind"] == "wandb" and shown["optim"] == dict(to_container(cfg.optim))
    assert (
        shown["trainer"]["kwargs"] == to_container(cfg.trainer)
        and shown["encoder"]["family"] == cfg.model.family
    )
    assert shown["stages"][-1]["analysis"]["heldout"] is True
    assert thaw(plan.config.public) == public_container(cfg) and plan.config.yaml == public_yaml(cfg)
    assert thaw(plan.config.resolved) == to_container(cfg)
    target_only = build_plan(validate(compose_cfg("model=tiny", "+target=xnli")), tmp_path)
    evaluated = evaluation_only(target_only, tmp_path / "best.ckpt", 3)
    for name in sections:  # xlt.evaluate's plan carries them too
        assert getattr(evaluated, name) == getattr(target_only, name)
