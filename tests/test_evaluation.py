"""Retrieval evaluation (xlt/evaluation/): one evaluator per retrieval kind, chosen by the spec."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from xlt import PROJECT_ROOT
from xlt.evaluation import RetrievalEvaluator, evaluator_for, register_evaluator
from xlt.evaluation.base import EVALUATORS
from xlt.tasks.registry import RETRIEVAL_KINDS, all_tasks, get_task


def test_every_retrieval_kind_a_spec_may_name_has_its_evaluator() -> None:
    assert set(EVALUATORS) == set(RETRIEVAL_KINDS)  # the task registry's check and the evaluators agree
    retrieval = [spec for spec in all_tasks().values() if spec.head == "retrieval"]
    assert {spec.name for spec in retrieval} >= {"tatoeba", "bucc2018"}
    for spec in retrieval:
        assert evaluator_for(spec).kind == spec.retrieval


def test_a_kind_without_an_evaluator_is_one_line_naming_the_known_ones() -> None:
    spec = dataclasses.replace(get_task("tatoeba"), retrieval="nearest5")
    with pytest.raises(
        ValueError,
        match=r"^task tatoeba: no evaluator for retrieval kind 'nearest5' \(known: mining, top1\)$",
    ):
        evaluator_for(spec)


def test_a_kind_registered_twice_is_refused() -> None:
    class Again(RetrievalEvaluator):
        kind = "top1"

    with pytest.raises(ValueError, match="registered twice"):
        register_evaluator(Again)


def test_the_runner_stays_the_orchestration() -> None:
    """Issue 16: the run (xlt/orchestration/run.py) only orders the phases (under 300 lines); what it
    used to hold lives in modules of under 500 lines each."""
    xlt = Path(PROJECT_ROOT) / "xlt"
    assert len((xlt / "orchestration" / "run.py").read_text().splitlines()) < 300
    orchestration = [f"orchestration/{p.name}" for p in (xlt / "orchestration").glob("*.py")]
    split_out = ["training/trainer.py", "training/callbacks.py", "training/loggers.py", *orchestration]
    for path in [*(xlt / name for name in split_out), *(xlt / "evaluation").glob("*.py")]:
        assert len(path.read_text().splitlines()) < 500, path


def test_a_retrieval_target_embeds_with_its_stage_settings_and_a_probe_with_retrievals(
    compose_cfg, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """target.max_seq_length (null: the spec's) and target.eval_batch_size size a Tatoeba target's
    embedding; retrieval.* sizes the probes (a value the config records must be the value used)."""
    import xlt.orchestration.stage
    from xlt.orchestration.run import run

    seen: list[tuple[str, int, int]] = []
    real = xlt.orchestration.stage.evaluate_retrieval

    def spy(spec, stage, languages, limit, retrieval_run):  # type: ignore[no-untyped-def]
        seen.append((stage, retrieval_run.batch_size, retrieval_run.max_length))
        return real(spec, stage, languages, limit, retrieval_run)

    monkeypatch.setattr(xlt.orchestration.stage, "evaluate_retrieval", spy)
    cfg = compose_cfg("+target=tatoeba", "model=tiny", "target.languages=[de]", "target.max_eval_examples=12",
                      "target.max_seq_length=24", "target.eval_batch_size=8", "probe.tasks=[tatoeba]",
                      "probe.languages=[de]", "probe.max_examples=12", "retrieval.batch_size=4",
                      f"data.dir={data_dir}")  # fmt: skip
    run(cfg, tmp_path / "run")
    assert ("target", 8, 24) in seen
    assert {entry for entry in seen if entry[0] != "target"} == {("pretrained", 4, 512)}
