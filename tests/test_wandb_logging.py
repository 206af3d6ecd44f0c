"""W&B logging (offline, in a temporary folder): counted parameters in the run config, every metric in
percent, evaluation metrics at the step the evaluated weights were trained to, the gap in the summary."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from xlt.results.rows import ResultRow


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, float], int | None]] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls.append((dict(metrics), step))

    def save(self) -> None:
        pass


def test_rows_are_logged_in_percent_at_the_evaluated_step() -> None:
    from xlt.orchestration.session import RunSession

    runner = RunSession.__new__(RunSession)  # only what log_rows reads
    runner.logger, runner.eval_step = Recorder(), 7
    rows = [ResultRow("target", "xnli", "test", lang, "acc", value)
            for lang, value in (("en", 80.0), ("de", 72.0), ("avg_non_en", 72.0), ("gap", 8.0), ("rel_gap", 0.1))]  # fmt: skip
    runner.log_rows(rows)
    ((metrics, step),) = runner.logger.calls
    assert step == 7
    assert metrics["test/xnli/rel_gap/acc"] == pytest.approx(10.0)  # percent, like the accuracies beside it
    assert metrics["test/xnli/gap/acc"] == 8.0 and metrics["test/xnli/en/acc"] == 80.0


def test_results_table_and_summary_are_in_percent_like_the_history() -> None:
    """The W&B results table stored rel_gap as a fraction (-0.078) beside the history's -7.81."""
    from types import SimpleNamespace

    from xlt.training.loggers import log_results

    tables: list[dict[str, Any]] = []

    class TableLogger(Recorder):
        experiment = SimpleNamespace(summary={})

        def log_table(self, **kwargs: Any) -> None:
            tables.append(kwargs)

    rows = [ResultRow("target", "xnli", "test", lang, "acc", value, 100)
            for lang, value in (("en", 80.0), ("avg_non_en", 72.0), ("gap", 8.0), ("rel_gap", 0.1))]  # fmt: skip
    logger = TableLogger()
    log_results(logger, rows)
    ((table,),) = [tables]
    by_language = {row[3]: row[5] for row in table["data"]}
    assert by_language["rel_gap"] == pytest.approx(10.0) and by_language["en"] == 80.0
    assert logger.experiment.summary["summary/xnli/rel_gap/acc"] == pytest.approx(10.0)


@pytest.mark.slow
def test_offline_wandb_run(compose_cfg, data_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import wandb

    from xlt.orchestration.run import run
    from xlt.orchestration.session import RunSession as Runner

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    logged: list[dict[str, Any]] = []
    original_log = wandb.Run.log

    def spy_log(self, data, *args, **kwargs):  # type: ignore[no-untyped-def]
        logged.append(dict(data))
        return original_log(self, data, *args, **kwargs)

    captured: dict[str, Any] = {}
    original_finish = Runner.finish

    def spy_finish(self: Runner) -> None:
        original_finish(self)
        experiment = self.logger.experiment
        captured["summary"] = {k: experiment.summary[k] for k in experiment.summary.keys()}  # noqa: SIM118 (a wandb Summary)
        captured["config"] = dict(experiment.config.as_dict())
        captured["ctx"] = self.ctx

    monkeypatch.setattr(wandb.Run, "log", spy_log)
    monkeypatch.setattr(Runner, "finish", spy_finish)
    cfg = compose_cfg(
        "+target=xnli", "model=tiny", "logger=wandb", "target.train_task=snli", "target.train_split=dev",
        "target.languages=[en,de]", "target.max_train_examples=48", "target.max_eval_examples=24",
        "target.epochs=1", "target.batch_size=16", "scale.per_device_batch_size=16",
        base=("trainer.enable_progress_bar=false",),
    )  # fmt: skip
    run(cfg, tmp_path / "run")
    err = capsys.readouterr().err
    assert "anonymous" not in err  # the warning Lightning's deprecated argument used to cause
    ctx = captured["ctx"]
    params = captured["config"]["params"]
    assert params["total"] == ctx.model_params > 0
    assert params["non_embedding"] == ctx.extra["model_params_non_embedding"] > 0
    # The commits the run read (none from the hub here: local files, the tiny model) beside its config.
    assert captured["config"]["data_commits"] == ctx.extra["data_commits"] == ""
    assert captured["config"]["model_revision"] == ctx.extra["model_revision"]
    # 48 examples, batch 16, one epoch: 3 steps, on Lightning's axis 0, 1, 2; its own epoch-end
    # validation lands on 2, and so does every evaluation after the fit (not a fresh Trainer's 0).
    evals = [d for d in logged if any(k.startswith(("test/", "dev/")) for k in d)]
    assert len(evals) >= 3 and all(d["trainer/global_step"] == 2 for d in evals), evals
    summary = captured["summary"]
    assert {"summary/xnli/en/acc", "summary/xnli/gap/acc", "summary/xnli/rel_gap/acc"} <= set(summary)
    en, non_en = summary["summary/xnli/en/acc"], summary["summary/xnli/avg_non_en/acc"]
    assert summary["summary/xnli/gap/acc"] == pytest.approx(en - non_en)
    assert summary["summary/xnli/rel_gap/acc"] == pytest.approx(100 * (1 - non_en / en))


def test_checkpoint_artifacts_and_a_run_id_from_the_dashboard(
    compose_cfg, tmp_path: Path, monkeypatch
) -> None:
    """logger.log_model does not turn on Lightning's log_model; logger.run_id continues that W&B run and is kept as the run directory's wandb_id."""
    from types import SimpleNamespace

    import pytorch_lightning.loggers

    from xlt.config import validate
    from xlt.training.loggers import build_logger

    seen: dict[str, Any] = {}

    class FakeWandbLogger:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)
            self._wandb_init: dict[str, Any] = {}

    monkeypatch.setattr(pytorch_lightning.loggers, "WandbLogger", FakeWandbLogger)
    monkeypatch.setenv("WANDB_MODE", "offline")
    ctx = SimpleNamespace(model="tiny", intermediate="none", target="xnli", seed=42, model_params=1, extra={})
    cfg = validate(compose_cfg("+target=xnli", "model=tiny", "logger=wandb", "logger.log_model=true",
                               "logger.run_id=dash1234", base=()))  # fmt: skip
    build_logger(*planned_logger(cfg), tmp_path, ctx)  # type: ignore[arg-type]
    # Lightning's log_model stays off: it uploads whatever saved last; xlt.training.loggers.log_checkpoint uploads
    # the selected checkpoint (test_selected_checkpoint_is_the_artifact).
    assert seen["log_model"] is False and seen["id"] == "dash1234" and seen["resume"] == "allow"
    assert (tmp_path / "wandb_id").read_text().strip() == "dash1234"
    seen.clear()
    relaunch = validate(compose_cfg("+target=xnli", "model=tiny", "logger=wandb", base=()))
    build_logger(*planned_logger(relaunch), tmp_path, ctx)  # type: ignore[arg-type]
    assert seen["log_model"] is False and seen["id"] == "dash1234"  # a relaunch keeps the run


def test_run_id_only_with_the_run_directory_of_that_run(compose_cfg, tmp_path: Path, monkeypatch) -> None:
    """logger.run_id is not a resume by itself: the checkpoints and state are in the run's folder.
    A fresh folder (no state.json) or one of another W&B run is refused in one line; the folder
    holding that id under outputs/ is named."""
    from xlt.config import validate
    from xlt.schema import ConfigError
    from xlt.training.loggers import check_run_id

    monkeypatch.chdir(tmp_path)
    cfg = planned_logger(
        validate(compose_cfg("+target=xnli", "model=tiny", "logger=wandb", "logger.run_id=dash1234", base=()))
    )[0]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(ConfigError, match="no run directory under outputs/ or multirun/ has that wandb_id"):
        check_run_id(cfg, fresh)
    origin = tmp_path / "outputs" / "2026-12-06" / "10-00-00"
    (origin / "checkpoints" / "target").mkdir(parents=True)
    (origin / "wandb_id").write_text("dash1234")
    (origin / "state.json").write_text("{}")
    with pytest.raises(ConfigError) as caught:
        check_run_id(cfg, fresh)
    message = str(caught.value)
    assert "\n" not in message and f"{fresh} has no state.json" in message
    assert message.endswith("add hydra.run.dir=outputs/2026-12-06/10-00-00")
    check_run_id(cfg, origin)  # its own folder: fine
    other = tmp_path / "other"
    other.mkdir()
    (other / "state.json").write_text("{}")
    (other / "wandb_id").write_text("abcd0000")
    with pytest.raises(ConfigError, match="belongs to W&B run abcd0000"):
        check_run_id(cfg, other)
    (other / "wandb_id").unlink()
    check_run_id(cfg, other)  # a run dir without a W&B id (CSV before) may adopt one
    check_run_id(
        planned_logger(validate(compose_cfg("+target=xnli", "model=tiny", "logger=wandb", base=())))[0], fresh
    )


def planned_logger(cfg: Any) -> tuple[Any, Any]:
    """The logger's settings and the public config of ``cfg``'s plan (what xlt.training.loggers takes)."""
    from xlt.orchestration.plan_sections import ConfigRecord, logger_plan

    return logger_plan(cfg.logger), ConfigRecord.of(cfg).public


def wandb_records(path: Path) -> list[Any]:
    """The records of an offline run's ``run-<id>.wandb`` (wandb's LevelDB-style log: 32 KiB blocks,
    each record a 7-byte header, checksum, length and kind, then its protobuf ``Record``)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, pending, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # full/first, or middle/last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_selected_checkpoint_is_the_artifact(compose_cfg, tmp_path: Path, monkeypatch) -> None:
    """log_model uploads the stage's selected best.ckpt (not last.ckpt) as model-<run id> with the
    aliases [stage, best]; read back from the offline run's own record of the artifact manifest."""
    import base64
    import hashlib

    import wandb

    from xlt.config import validate
    from xlt.training.loggers import log_checkpoint

    for key, sub in (("WANDB_DIR", "wandb"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache")):
        monkeypatch.setenv(key, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    ckpts = tmp_path / "checkpoints" / "target"
    ckpts.mkdir(parents=True)
    (ckpts / "best.ckpt").write_bytes(b"selected weights")
    (ckpts / "last.ckpt").write_bytes(b"weights and optimizer state, saved later")
    cfg = validate(
        compose_cfg("+target=xnli", "model=tiny", "logger=wandb", "logger.log_model=true", base=())
    )
    on = planned_logger(cfg)[0]
    off = planned_logger(validate(compose_cfg("+target=xnli", "model=tiny", "logger=wandb", base=())))[0]
    run = wandb.init(project="xlt-test", id="art12345", dir=str(tmp_path / "wandb"),
                     settings=wandb.Settings(silent=True))  # fmt: skip
    try:
        log_checkpoint(on, SimpleNamespace(experiment=run), ckpts / "best.ckpt", "target", 6)
        log_checkpoint(
            off, SimpleNamespace(experiment=run), ckpts / "last.ckpt", "target", 6
        )  # log_model off
    finally:
        wandb.finish()
    (log_file,) = (tmp_path / "wandb").rglob("run-art12345.wandb")
    artifacts = [r.artifact for r in wandb_records(log_file) if r.WhichOneof("record_type") == "artifact"]
    assert len(artifacts) == 1, artifacts
    (artifact,) = artifacts
    assert artifact.name == "model-art12345" and artifact.type == "model"
    assert {"target", "best"} <= set(artifact.aliases)
    assert json.loads(artifact.metadata) == {
        "stage": "target",
        "step": 6,
        "file": "best.ckpt",
        "selected": True,
    }
    entries = {e.path: e for e in artifact.manifest.contents}
    assert list(entries) == ["target/best.ckpt"]
    md5 = base64.b64encode(hashlib.md5(b"selected weights").digest()).decode()
    assert entries["target/best.ckpt"].digest == md5 and entries["target/best.ckpt"].size == 16
