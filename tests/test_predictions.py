"""Predictions in XTREME's submission layout: a run's ``predictions/`` folder, scored by
``python -m xlt.score`` against labels built from the same gold data, gives the run's own test
metrics. Tiny model, one batch per loop, small real subsets (XNLI, UD-POS, XQuAD)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from xlt.orchestration.run import run
from xlt.results.submission import render, write_predictions
from xlt.score import score_submission
from xlt.tasks.loading import load_split
from xlt.tasks.registry import get_task

TINY = ("model=tiny", "debug=fdr", "scale.per_device_batch_size=16", "target.batch_size=16",
        "target.eval_batch_size=64", "target.max_train_examples=32")  # fmt: skip


def _labels_dir(root: Path, task: str, langs: list[str], data_dir: Path, limit: int) -> Path:
    """Gold files in the submission layout, from the same examples the run evaluated."""
    spec = get_task(task)
    for lang in langs:
        examples = load_split(spec, spec.test_split, lang, "local", data_dir, limit=limit).examples
        content: Any
        if spec.head == "classification":
            fmt, content = "labels", [spec.label_names[ex["label"]] for ex in examples]
        elif spec.head == "tagging":
            fmt, content = "tags", [[spec.label_names[t] for t in ex["labels"]] for ex in examples]
        else:
            fmt = "qa"
            qas = [{"id": ex["id"], "question": ex["question"], "answers": ex["answers"]} for ex in examples]
            content = {"data": [{"title": "t", "paragraphs": [{"context": "", "qas": qas}]}]}
            path = root / task / f"test-{lang}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content), encoding="utf-8")
            continue
        write_predictions(root, task, "test", lang, fmt, content)
    return root


def _score(run_dir: Path, labels: Path, langs: list[str]) -> dict[str, Any]:
    scores = score_submission(run_dir / "predictions", labels)
    # The official languages this run did not evaluate are missing on both sides, nothing else.
    assert all(p.startswith("missing file:") and not any(f"test-{lang}." in p for lang in langs)
               for p in scores.problems)  # fmt: skip
    return scores.tasks


@pytest.mark.parametrize(
    ("task", "overrides", "langs", "metrics"),
    [
        ("xnli", ("target.train_task=snli", "target.train_split=dev", "target.max_eval_examples=30"),
         ["en", "de", "sw"], {"accuracy": "acc"}),
        ("udpos", ("target.max_eval_examples=24",), ["en", "de", "ja"], {"f1": "f1"}),
        ("xquad", ("target.max_eval_examples=20",), ["en", "zh"], {"exact_match": "em", "f1": "f1"}),
    ],
)  # fmt: skip
def test_score_of_written_predictions_reproduces_the_run(
    compose_cfg, data_dir: Path, tmp_path: Path, task: str, overrides: tuple[str, ...], langs: list[str],
    metrics: dict[str, str],
) -> None:  # fmt: skip
    limit = int(next(o for o in overrides if o.startswith("target.max_eval_examples=")).split("=")[1])
    cfg = compose_cfg(*TINY, f"+target={task}", f"target.languages=[{','.join(langs)}]", *overrides)
    summary = run(cfg, tmp_path / "run")
    folder = tmp_path / "run" / "predictions" / task
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"test-{lang}.{'json' if task == 'xquad' else 'tsv'}" for lang in langs
    )
    scores = _score(tmp_path / "run", _labels_dir(tmp_path / "labels", task, langs, data_dir, limit), langs)
    for official, ours in metrics.items():
        for lang in langs:
            assert scores[task][official][lang] == pytest.approx(
                summary[f"test/{task}/{lang}/{ours}"], abs=1e-6
            )


def test_render_formats() -> None:
    assert render("labels", ["entailment", "neutral"]) == "entailment\nneutral\n"
    assert render("tags", [["NOUN", "VERB"], ["X"]]) == "NOUN\nVERB\n\nX\n\n"
    assert render("pairs", [("de-1", "en-2")]) == "de-1\ten-2\n"
    assert render("index", [3, 0]) == "3\n0\n"
    assert json.loads(render("qa", {"q1": "Denver"})) == {"q1": "Denver"}
    with pytest.raises(ValueError, match="unknown prediction format"):
        render("csv", [])


def test_tatoeba_index_file_in_xtreme_sorted_layout(compose_cfg, data_dir: Path, tmp_path: Path) -> None:
    from xlt.metrics.retrieval import tatoeba_sorted_gold

    langs = ["de", "fr"]
    cfg = compose_cfg(
        "model=tiny", "+target=tatoeba", "target.languages=[de,fr]", "target.max_eval_examples=50"
    )
    summary = run(cfg, tmp_path / "run")
    spec = get_task("tatoeba")
    for lang in langs:
        english = [ex["en"] for ex in load_split(spec, "test", lang, "local", data_dir, limit=50).examples]
        write_predictions(
            tmp_path / "labels", "tatoeba", "test", lang, "index", tatoeba_sorted_gold(english)[1]
        )
    scores = _score(tmp_path / "run", tmp_path / "labels", langs)
    for lang in langs:
        assert scores["tatoeba"]["accuracy"][lang] == pytest.approx(
            summary[f"test/tatoeba/{lang}/acc"], abs=1e-6
        )


def _collector_worker(rank: int, port: int, idle_rank: int, queue: Any) -> None:
    import os

    import torch
    import torch.distributed as dist

    from xlt.modeling.heads import PredictionCollector

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    collector = PredictionCollector()
    # The eval sampler deals examples out in turn: rank 0 gets 4, 2, 0 and rank 1 gets 3, 1.
    shard = {0: [4, 2, 0], 1: [3, 1]}[rank]
    if rank != idle_rank:
        idx = torch.tensor(shard)
        collector.update(idx, torch.stack([idx * 10, idx * 10 + 1], dim=1))
    queue.put((rank, collector.compute()))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("idle_rank", [-1, 1])
def test_prediction_collector_gathers_across_real_gloo_ranks(idle_rank: int) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_collector_worker, args=(r, port, idle_rank, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert results[0] == results[1]  # every rank sees the whole set; rank zero writes it
    idx, rows = results[0]
    expected = [0, 1, 2, 3, 4] if idle_rank == -1 else [0, 2, 4]
    assert sorted(idx) == expected
    assert all(row == [10.0 * i, 10.0 * i + 1] for i, row in zip(idx, rows, strict=True))


def test_partial_predictions_are_not_written_and_the_option_turns_writing_off(
    compose_cfg, data_dir: Path, tmp_path: Path
) -> None:
    base = (*TINY, "+target=xnli", "target.train_task=snli", "target.train_split=dev", "target.languages=[en,de]",
            "target.max_eval_examples=40")  # fmt: skip
    # One test batch of 16 of the 40 examples (fast_dev_run): no file, one line saying why.
    run(compose_cfg(*base, "target.eval_batch_size=16"), tmp_path / "partial")
    assert not (tmp_path / "partial" / "predictions" / "xnli").exists()
    skipped = json.loads((tmp_path / "partial" / "state.json").read_text())["skipped"]
    assert "predictions xnli/test-de: only 16 of 40 examples were predicted; file not written" in skipped
    run(compose_cfg(*base, "predictions=false"), tmp_path / "off")
    assert not (tmp_path / "off" / "predictions").exists()
