"""Each fact of issue 26's list is written once (task arch4): the metric-key format, the per-head-kind
table, the per-task training-set sizes, MLQA's languages, a stage's sequence length, the selection
recipe of the stage files."""

from __future__ import annotations

import ast
import re

from xlt import PROJECT_ROOT
from xlt.metrics.keys import metric_key, parse_metric_key, parse_set_key, score_key, set_key

PACKAGE = PROJECT_ROOT / "xlt"


def test_metric_keys_round_trip() -> None:
    assert set_key("dev", "xnli", "en") == "dev/xnli/en"
    assert metric_key("test", "xnli", "de", "acc") == "test/xnli/de/acc" == score_key("test/xnli/de", "acc")
    assert parse_set_key("dev/anli/en") == ("dev", "anli", "en")
    assert parse_metric_key("test/xnli/de/acc") == ("test", "xnli", "de", "acc")
    assert parse_metric_key("test/xnli/de") is None and parse_metric_key("epoch") is None


KEY_BUILDERS_ALLOWED = {"xlt/metrics/keys.py"}


def test_the_metric_key_format_is_built_in_one_module() -> None:
    """No f-string of the shape ``{a}/{b}/{c}`` or ``{key}/{metric}`` with an evaluation's names
    outside xlt/metrics/keys.py."""
    pattern = re.compile(r"\{[^{}]*(split|key|whole|name)[^{}]*\}/\{[^{}]*(task|name|metric)[^{}]*\}")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PROJECT_ROOT))
        if rel in KEY_BUILDERS_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                text = ast.unparse(node)
                if pattern.search(text) and (
                    "lang" in text or "metric" in text or "selection" in text or "name" in text
                ):
                    found.append(f"{rel}:{node.lineno}: {text}")
    assert not found, "metric keys built outside xlt/metrics/keys.py:\n" + "\n".join(found)


def test_mlqa_languages_are_the_scorers_rules() -> None:
    """MLQA's languages are written once, in the task spec (evaluate.py's order); the scorer's list is
    the keys of its per-language rules, the same set."""
    from xlt.metrics.qa import MLQA_LANGUAGES
    from xlt.tasks.registry import get_task

    assert set(MLQA_LANGUAGES) == set(get_task("mlqa").languages)
    source = (PACKAGE / "metrics" / "qa.py").read_text(encoding="utf-8")
    assert '"en", "es"' not in source  # no second literal list


def test_training_set_sizes_live_on_the_task_specs() -> None:
    """xlt.plan reads a published training-set size from the task's spec (no table of its own)."""
    import xlt.plan.jobs as jobs
    from xlt.tasks.registry import get_task

    assert not hasattr(jobs, "TRAIN_SIZES")
    n, source = jobs.training_set_size("anli_rounds", "train_r1+train_r2", None)
    sizes = get_task("anli_rounds").train_sizes
    assert n == sizes["train_r1"][0] + sizes["train_r2"][0]
    assert sizes["train_r1"][1] in source


def test_a_stage_sequence_length_is_decided_by_one_function() -> None:
    """xlt.tasks.lengths.seq_length: a member's own length, else the stage's, else the spec's; the
    probes' is retrieval.max_seq_length. Validation fills null stage lengths with it."""
    from omegaconf import OmegaConf

    from xlt.tasks.lengths import seq_length
    from xlt.tasks.registry import get_task

    stage = OmegaConf.create({"name": "xnli", "max_seq_length": None, "members": {}})
    assert seq_length(stage) == get_task("xnli").max_seq_length
    mixture = OmegaConf.create(
        {"name": "all9", "max_seq_length": 200, "members": {"squad": {"max_seq_length": 384}, "mnli": {}}}
    )
    assert (seq_length(mixture, "squad"), seq_length(mixture, "mnli"), seq_length(mixture, "qqp")) == (
        384,
        200,
        200,
    )
    assert seq_length(OmegaConf.create({"max_seq_length": 512, "batch_size": 64})) == 512
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PROJECT_ROOT))
        if rel in ARCH3_FILES or rel == "xlt/tasks/lengths.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert "member.max_seq_length or" not in text, rel
        assert "int(stage.max_seq_length)" not in text, rel


# arch3 merged: the orchestration (xlt/orchestration/) applies these functions too; nothing is exempt.
ARCH3_FILES: set[str] = set()


def test_the_selection_recipe_is_one_shared_default_of_every_stage_file() -> None:
    """Every trained stage file names conf/selection/ in its defaults list and restates none of the
    recipe's keys; the recipe's values are written once (conf/selection/jiant.yaml)."""
    import yaml

    conf = PROJECT_ROOT / "conf"
    recipe = ("val_check_every", "val_subset", "patience", "select_on")
    stage_files = sorted((conf / "target").glob("*.yaml")) + sorted((conf / "intermediate").glob("*.yaml"))
    trained = [p for p in stage_files if p.stem not in ("tatoeba", "bucc2018")]  # retrieval: nothing trained
    assert len(trained) == 18
    for path in trained:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        option = "jiant_target" if path.parent.name == "target" else "jiant"
        assert data["defaults"] == [{"/selection@_here_": option}, "_self_"], path.name
        assert not set(recipe) & set(data), f"{path.name} restates the selection recipe"
    values = [
        p for p in (conf / "selection").glob("*.yaml") if "val_check_every" in p.read_text(encoding="utf-8")
    ]
    assert [p.name for p in values] == ["jiant.yaml"]


def test_the_stage_files_compose_to_the_recipe(compose_cfg) -> None:
    cfg = compose_cfg("+intermediate=mnli", "+target=xquad", "model=tiny")
    for stage in (cfg.intermediate, cfg.target):
        assert (stage.val_check_every, stage.val_subset, stage.patience) == (1000, 500, 30)
    assert cfg.target.select_on == "target" and "select_on" not in cfg.intermediate
    overridden = compose_cfg("+target=xnli", "model=tiny", "target.patience=null")
    assert overridden.target.patience is None and overridden.target.val_check_every == 1000
