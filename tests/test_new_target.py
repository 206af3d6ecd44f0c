"""A 10th target of an existing head kind is one task spec and one YAML file.

The spec is registered for this test only and the YAML lives in a temporary config folder on Hydra's
search path; the run goes through the real ``xlt.orchestration.run.run`` with ``model=tiny``. The spec is the only
place that says the task's languages, English training source and sequence length: the validated
config, the config lock, the result rows and the prediction files must all show them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from xlt.config import validate
from xlt.metrics.xtreme import XTREME_TASK2LANGS
from xlt.orchestration.run import run
from xlt.results.rows import read_results
from xlt.tasks.loading import load_split
from xlt.tasks.nli import NLI_ALIASES, NLI_LABELS
from xlt.tasks.registry import TASKS, get_task, register_task
from xlt.tasks.spec import RawFile, TaskSpec

NAME = "nli_de_sw"
LANGS = ("en", "de", "sw")
EVAL_CAP = 40  # examples per language: one eval batch of 64 under debug=fdr

# The whole new task: XNLI's files here (complete en/de/sw dev and test) under a new target, trained
# on English SNLI (MNLI is not here), at a sequence length no YAML file states.
SPEC = TaskSpec(
    name=NAME,
    description="NLI zero-shot to German and Swahili: English SNLI training, XNLI English dev, XNLI test",
    head="classification",
    metrics=("acc",),
    languages=LANGS,
    label_names=NLI_LABELS,
    label_aliases=NLI_ALIASES,
    raw={
        split: (
            RawFile(f"xnli/{{lang}}/{{lang}}.genre.{split}.tsv", "xnli_genre_tsv"),
            RawFile(f"xnli/{{lang}}/xglue_{{lang}}_{split}.tsv", "nli_tsv3"),
        )
        for split in ("dev", "test")
    },
    train_task="snli",
    max_seq_length=48,
    roles=("target",),
)

# The whole config file: run settings only (null: the spec's).
YAML = f"""\
name: {NAME}
train_task: null
train_split: dev           # SNLI's largest split here
dev_split: null
languages: null
epochs: 1
lr: 1.0e-4
batch_size: 16
eval_batch_size: 64
max_seq_length: null
max_train_examples: 32
max_eval_examples: {EVAL_CAP}
"""


@pytest.fixture
def new_target(tmp_path: Path) -> Iterator[Path]:
    """The spec registered and the YAML in a config folder; both gone afterwards."""
    conf = tmp_path / "conf"
    (conf / "target").mkdir(parents=True)
    (conf / "target" / f"{NAME}.yaml").write_text(YAML, encoding="utf-8")
    register_task(SPEC)
    try:
        yield conf
    finally:
        del TASKS[NAME]


def test_a_tenth_target_is_one_spec_and_one_yaml(
    compose_cfg, data_dir: Path, new_target: Path, tmp_path: Path
) -> None:
    cfg = compose_cfg(f"hydra.searchpath=[file://{new_target}]", f"+target={NAME}", "model=tiny", "debug=fdr",
                      "scale.per_device_batch_size=16")  # fmt: skip
    checked = validate(cfg)
    assert (checked.target.train_task, checked.target.max_seq_length) == ("snli", 48)  # from the spec

    run_dir = tmp_path / "run"
    summary = run(cfg, run_dir)

    lock = OmegaConf.load(run_dir / "config.yaml")  # the config lock records the values used
    assert (lock.target.train_task, lock.target.max_seq_length) == ("snli", 48)
    rows = [
        r for r in read_results(run_dir / "results.jsonl") if r["stage"] == "target" and r["split"] == "test"
    ]
    assert {r["task"] for r in rows} == {NAME} and {r["train_task"] for r in rows} == {"snli"}
    per_lang = {r["language"]: r for r in rows if r["metric"] == "acc" and r["language"] in LANGS}
    assert sorted(per_lang) == sorted(LANGS)
    for lang, row in per_lang.items():
        assert row["n_examples"] == EVAL_CAP
        assert row["value"] == summary[f"test/{NAME}/{lang}/acc"]
        # The predictions file (format from the head kind) scores to the row's accuracy.
        assert get_task(NAME).prediction_format == "labels"
        predicted = (run_dir / "predictions" / NAME / f"test-{lang}.tsv").read_text(encoding="utf-8").split()
        gold = [NLI_LABELS[ex["label"]] for ex in load_split(SPEC, "test", lang, "local", data_dir,
                                                             limit=EVAL_CAP).examples]  # fmt: skip
        assert len(predicted) == len(gold) == EVAL_CAP
        assert row["value"] == pytest.approx(
            100 * sum(p == g for p, g in zip(predicted, gold, strict=True)) / EVAL_CAP
        )
    averaged = [r for r in rows if r["language"] == "avg" and r["metric"] == "acc"]
    assert len(averaged) == 1
    assert averaged[0]["value"] == pytest.approx(sum(r["value"] for r in per_lang.values()) / len(LANGS))
    assert NAME not in XTREME_TASK2LANGS  # not one of XTREME's nine: its tables are untouched


def test_a_spec_scored_by_xtreme_must_have_its_place_in_the_benchmarks_order() -> None:
    """TaskSpec.xtreme without the task in XTREME_TASKS (evaluate.py's order) is refused rather than
    left out of every XTREME table."""
    import dataclasses

    import xlt.metrics.xtreme as xtreme
    from xlt.tasks.spec import Xtreme

    scored = dataclasses.replace(SPEC, xtreme=Xtreme("classification", "accuracy"))
    register_task(scored)
    try:
        with pytest.raises(
            ValueError, match=f"task\\(s\\) {NAME} have xtreme scoring .* not in XTREME_TASKS"
        ):
            xtreme._specs()
    finally:
        del TASKS[NAME]
    assert list(xtreme._specs()) == list(XTREME_TASK2LANGS)
