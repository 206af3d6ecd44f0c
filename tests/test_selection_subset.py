"""The selection subset (xlt/data/selection.py): drawn at random with the run's seed, stratified by
genre on XNLI's English dev (whose first 500 are 2 of its 10 genres), recorded with a digest of the
drawn ids; the same seed draws the same subset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from xlt.data.selection import draw_selection
from xlt.tasks.loading import Loaded, load_split
from xlt.tasks.registry import get_task


def test_xnli_english_dev_subset_covers_every_genre(data_dir: Path) -> None:
    loaded = load_split(get_task("xnli"), "dev", "en", "local", data_dir)
    genres = Counter(ex["genre"] for ex in loaded.examples)
    assert len(loaded.examples) == 2_490 and len(genres) == 10 and set(genres.values()) == {249}
    first = Counter(ex["genre"] for ex in loaded.examples[:500])
    assert first == {"facetoface": 249, "telephone": 249, "oup": 2}  # what "the first 500" selected on
    drawn, record = draw_selection(loaded, 500, 1, "xnli/dev")
    assert len(drawn.examples) == 500 and record["stratified_by"] == "genre"
    assert set(record["strata"].values()) == {50} and len(record["strata"]) == 10
    labels = Counter(ex["label"] for ex in drawn.examples)
    assert max(labels.values()) - min(labels.values()) < 40  # the genres' labels are balanced too
    again, same = draw_selection(loaded, 500, 1, "xnli/dev")
    assert again.examples == drawn.examples and same["ids_blake2b"] == record["ids_blake2b"]
    other, differs = draw_selection(loaded, 500, 2, "xnli/dev")
    assert differs["ids_blake2b"] != record["ids_blake2b"] and other.fingerprint != drawn.fingerprint
    order = {id(ex): i for i, ex in enumerate(loaded.examples)}
    assert [order[id(ex)] for ex in drawn.examples] == sorted(order[id(ex)] for ex in drawn.examples)


def test_label_strata_get_their_share_by_largest_remainder() -> None:
    examples = [{"id": str(i), "label": 0 if i < 70 else 1} for i in range(100)]
    drawn, record = draw_selection(Loaded(examples, "x"), 15, 3, "t/dev")
    assert record["stratified_by"] == "label" and record["strata"] == {
        "0": 11,
        "1": 4,
    }  # 10.5 -> 11, 4.5 -> 4
    assert record["n"] == 15 and record["of"] == 100
    whole, everything = draw_selection(Loaded(examples, "x"), 500, 3, "t/dev")
    assert whole.examples == examples and everything["n"] == 100


def test_select_on_train_task_selects_on_the_training_tasks_validation_set(compose_cfg) -> None:
    """jiant's XTREME scripts early-stop XNLI on MNLI's validation set; target.select_on=train_task does
    the same (the audit then checks that set); QA targets select on SQuAD dev either way."""
    import pytest

    from xlt.audit.sets import run_sets
    from xlt.config import validate
    from xlt.schema import ConfigError

    def selects(*overrides: str) -> list[str]:
        cfg = validate(compose_cfg("model=tiny", *overrides))
        return [s.name for s in run_sets(cfg) if s.stage == "target" and s.role == "select"]

    assert selects("+target=xnli") == ["xnli/dev"]
    assert selects("+target=xnli", "target.select_on=train_task") == ["mnli/dev"]
    assert selects("+target=xnli", "target.train_task=snli", "target.select_on=train_task") == ["snli/dev"]
    assert selects("+target=xquad", "target.select_on=train_task") == ["xquad/squad_dev"]
    with pytest.raises(ConfigError, match=r"target.select_on='mnli': expected target .* or train_task"):
        validate(compose_cfg("model=tiny", "+target=xnli", "target.select_on=mnli"))


def test_the_xstilts_sweep_adds_squad_and_hellaswag_to_the_intermediate_axis() -> None:
    from xlt.plan.cli import sweep_jobs

    jobs = sweep_jobs(["+sweep=scale_gap_xstilts"])
    assert len(jobs) == 6 * 5 * 9 * 3
    inter = {o for job in jobs for o in job if o.startswith("intermediate=")}
    assert inter == {f"intermediate={t}" for t in ("none", "mnli", "anli", "squad", "hellaswag")}


def _comments(path: Path) -> str:
    return " ".join(
        line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")
    )


def test_qa_target_files_say_where_their_selection_comes_from() -> None:
    """XTREME's train_qa.sh keeps the final checkpoint (reference.md section 2.2): no QA file may claim
    that XTREME's reference code selects on the target's English dev; TyDiQA's must say that
    select_on=train_task is not jiant's set (jiant early-stops on the English GoldP dev = test file)."""
    conf = Path(__file__).resolve().parents[1] / "conf"
    for name in ("xquad", "mlqa", "tydiqa"):
        text = _comments(conf / "target" / f"{name}.yaml")
        assert "as XTREME's reference code does" not in text, name
        assert "keeps the final checkpoint" in text and "train_qa.sh" in text, name
    tydiqa = _comments(conf / "target" / "tydiqa.yaml")
    assert "does NOT replicate jiant" in tydiqa and "the same set" not in tydiqa.replace(
        "not the same set", ""
    )
    xquad = _comments(conf / "target" / "xquad.yaml")
    assert "1,190 questions" not in xquad and "every question written on XQuAD's 240 paragraphs" in xquad
    for name in ("xnli", "pawsx", "udpos", "panx"):
        assert "and for QA" not in _comments(conf / "target" / f"{name}.yaml"), name
    analysis = (conf.parent / "docs" / "analysis.md").read_text()
    assert (
        "and for QA it is the same set" not in analysis and "keeps the final weights deliberately" in analysis
    )
    sweep = _comments(conf / "sweep" / "scale_gap_xstilts.yaml")
    assert "Which SQuAD is unclear in the paper" in sweep and "SQuAD v2.0" in sweep


def test_select_on_train_task_loads_the_training_tasks_validation_set_in_the_stage(
    compose_cfg, cache_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """The stage's own data path (StageExecutor.stage_data -> prepare_stage_data(dev_task=...)), not only
    the audit: with select_on=train_task XNLI's selection set is its training task's validation set
    (MNLI's: the real excerpt of MultiNLI 1.0 dev_matched in the shared data, laid out where the reader
    looks; SNLI's: its real dev file), with its size and origin recorded; by default it is a draw of
    500 from XNLI's 2,490 English dev examples."""
    import dataclasses
    from types import SimpleNamespace

    from xlt.config import validate
    from xlt.data.datamodule import DataSettings
    from xlt.modeling.encoder import load_tokenizer
    from xlt.orchestration.plan import build_plan
    from xlt.orchestration.stage import StageExecutor

    mnli_dir = tmp_path / "multinli_1.0"
    mnli_dir.mkdir()
    (mnli_dir / "multinli_1.0_dev_matched.jsonl").symlink_to(
        data_dir / "mnli" / "hf_dummy" / "multinli_1.0" / "multinli_1.0_dev_matched.jsonl"
    )
    (tmp_path / "xnli").symlink_to(data_dir / "xnli")

    def selection(directory: Path, train_task: str, *overrides: str):
        cfg = validate(
            compose_cfg("model=tiny", "+target=xnli", f"target.train_task={train_task}", *overrides)
        )
        settings = DataSettings("local", directory, cache_dir, load_tokenizer(cfg.model, cache_dir), seed=1)
        session = SimpleNamespace(settings=settings, skip=lambda line: None)
        target = build_plan(cfg, directory).stage("target")
        # the selection set only: no training data is read, no test set
        stage = dataclasses.replace(target, train_split=None, evaluation=())
        data = StageExecutor(session).stage_data(stage, trains=False)  # type: ignore[arg-type]
        (val,) = data.val
        (record,) = settings.pop_selections().values()
        return val, record

    val, record = selection(tmp_path, "mnli", "target.select_on=train_task")
    mnli_dev = load_split(get_task("mnli"), "dev", "en", "local", tmp_path)
    assert val.origin == mnli_dev.origin and "multinli_1.0_dev_matched" in val.origin and val.task == "xnli"
    assert len(val.features) == len(mnli_dev.examples) == record["n"] == record["of"]
    val, record = selection(data_dir, "snli", "target.select_on=train_task")
    assert "snli" in val.origin and len(val.features) == record["n"] == 500 and record["of"] == 9_842
    val, record = selection(tmp_path, "mnli")
    assert "xnli" in val.origin.lower() and len(val.features) == 500 and record["of"] == 2_490


def test_a_draw_without_ids_is_digested_by_text_not_position() -> None:
    """NLI and tagging examples have no id: the digest names the drawn texts, so two sets whose drawn
    positions agree but whose texts differ get different digests; the loaded fingerprint is recorded."""

    def nli(texts: list[str]) -> Loaded:
        return Loaded([{"text_a": t, "text_b": "a hypothesis long enough to count", "label": 0} for t in texts],
                      "x", 0, "fp-" + texts[0])  # fmt: skip

    first = nli([f"premise number {i} of the first file" for i in range(10)])
    second = nli([f"premise number {i} of another file" for i in range(10)])
    _, a = draw_selection(first, 4, 1, "t/dev")
    _, b = draw_selection(second, 4, 1, "t/dev")
    assert a["digest_of"] == "texts" and a["ids_blake2b"] != b["ids_blake2b"]  # was equal: positions
    assert a["loaded_fingerprint"] == first.fingerprint
    _, short = draw_selection(Loaded([{"text_a": "Hi.", "text_b": "", "label": i % 2} for i in range(6)], "x"),
                              2, 1, "t/dev")  # fmt: skip
    assert short["digest_of"] == "texts" and short["n"] == 2
    with_ids = Loaded([{"id": str(i), "label": 0} for i in range(10)], "x")
    assert draw_selection(with_ids, 4, 1, "t/dev")[1]["digest_of"] == "ids"
