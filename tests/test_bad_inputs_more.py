"""The second battery of bad inputs (issue 24): every key a user can set, Hydra's own errors, run
directories someone touched, every CLI's main, and readers' duplicates and structural oddities.

Each case must end in one line naming the option, file or line and what was expected; through a
CLI's ``main`` that line is on stderr with exit status 2 and no traceback; nothing a later run or
``xlt.results`` trusts is left behind. Most cases are validation- or reader-level and run in-process
(a few seconds in all); a few go through a real subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xlt import PROJECT_ROOT
from xlt.schema import ConfigError
from xlt.tasks import DataError, get_task
from xlt.tasks.loading import load_split

TRUSTED = ("results.jsonl", "state.json", "predictions", "config.yaml")
XNLI_RUN = ("model=tiny", "+target=xnli", "target.languages=[en,de]")
README = str(PROJECT_ROOT / "README.md")


def one_line(message: str) -> str:
    assert message and "\n" not in message.strip(), message
    assert "Traceback" not in message, message
    return message.strip()


def only_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    return one_line(lines[0])


# -- 1. every key a user can set: refused at validation, before anything is built or written --------

GPU = "torch.cuda.is_available()"
KEY_CASES = [
    ("seed-negative", ("seed=-1",), r"^seed=-1: expected an integer from 0 to 4294967295$"),
    ("seed-too-large", ("seed=4294967296",), r"^seed=4294967296: expected an integer from 0"),
    ("seed-not-a-number", ("seed=abc",), r"^config option 'seed'"),
    ("num-layers-zero", ("model.num_layers=0",), r"^model\.num_layers=0: expected an integer >= 1$"),
    ("hidden-size-zero", ("model.hidden_size=0",), r"^model\.hidden_size=0: expected an integer >= 1$"),
    ("heads-zero", ("model.num_attention_heads=0",), r"^model\.num_attention_heads=0: expected an integer >= 1"),
    ("heads-not-dividing", ("model.num_attention_heads=3",),
     r"^model\.hidden_size=32: not divisible by model\.num_attention_heads=3$"),
    ("intermediate-size-zero", ("model.intermediate_size=0",), r"^model\.intermediate_size=0: expected"),
    ("vocab-size-zero", ("model.vocab_size=0",), r"^model\.vocab_size=0: expected an integer >= 1"),
    ("max-position-embeddings-zero", ("model.max_position_embeddings=0",), r"^model\.max_position_embeddings=0"),
    ("type-vocab-negative", ("model.type_vocab_size=-1",), r"^model\.type_vocab_size=-1: expected an integer >= 0"),
    ("kv-heads-not-dividing", ("+model.num_key_value_heads=3", "model.num_attention_heads=4"),
     r"^model\.num_key_value_heads=3: does not divide model\.num_attention_heads=4$"),
    ("keep-layers-zero", ("+model.keep_layers=0",), r"^model\.keep_layers=0: expected an integer >= 1"),
    ("random-init-dropout", ("+model.random_init.hidden_dropout_prob=1.5",),
     r"^model\.random_init\.hidden_dropout_prob=1\.5: expected 0 <= p < 1$"),
    ("random-init-layers", ("+model.random_init.num_hidden_layers=0",),
     r"^model\.random_init\.num_hidden_layers=0: expected an integer >= 1$"),
    ("model-max-positions-zero", ("model.max_positions=0",), r"^model\.max_positions=0: expected >= 1"),
    ("model-pooling", ("model.pooling=max",), r"^model\.pooling='max': expected one of cls, mean, last$"),
    ("model-family", ("model.family=bert",), r"^model\.family='bert': expected one of"),
    ("model-dtype", ("model.dtype=int8",), r"^model\.dtype='int8': expected one of"),
    ("model-source", ("model.source=s3",), r"^model\.source='s3': expected one of"),
    ("strategy-unknown", ("scale.strategy=ddpx",), r"^scale\.strategy='ddpx': expected one of auto, ddp, "),
    ("strategy-target-missing", ("scale.strategy={_target_:nowhere.NoStrategy}",),
     r"^scale\.strategy\._target_='nowhere\.NoStrategy': no such class"),
    ("strategy-number", ("scale.strategy=3",), r"^scale\.strategy"),
    ("lora-r-zero", ("scale.lora.r=0",), r"^scale\.lora\.r=0: expected an integer >= 1$"),
    ("lora-r-float", ("scale.lora.r=1.5",), r"^config option 'scale\.lora\.r'"),
    ("lora-alpha-zero", ("scale.lora.alpha=0",), r"^scale\.lora\.alpha=0: expected > 0$"),
    ("lora-dropout-one", ("scale.lora.dropout=1.0",), r"^scale\.lora\.dropout=1\.0: expected 0 <= dropout < 1$"),
    ("lora-dropout-negative", ("scale.lora.dropout=-0.1",), r"^scale\.lora\.dropout=-0\.1: expected"),
    ("lora-modules-empty", ("scale.lora.target_modules=[]",), r"^scale\.lora\.target_modules=\[\]: expected a non-empty"),
    ("lora-lr-negative", ("scale.lora.lr=-1",), r"^scale\.lora\.lr=-1\.0: expected > 0 or null$"),
    ("peft-unknown", ("scale.peft=qlora",), r"^scale\.peft='qlora': expected one of none, lora$"),
    ("precision-unknown", ("scale.precision=8",), r"^scale\.precision='8': expected one of"),
    ("gpu-memory-zero", ("scale.gpu_memory_gb=0",), r"^scale\.gpu_memory_gb=0\.0: expected > 0"),
    ("num-nodes-zero", ("scale.num_nodes=0",), r"^scale\.num_nodes=0: expected >= 1$"),
    ("checkpoint-every-zero", ("scale.checkpoint_every_n_steps=0",), r"^scale\.checkpoint_every_n_steps=0: expected"),
    ("per-device-not-dividing", ("scale.per_device_batch_size=5", "target.batch_size=32"),
     r"^target\.batch_size: 32 is not a multiple of the per-device batch 5"),
    ("accelerator-unknown", ("trainer.accelerator=quantum",), r"^trainer\.accelerator='quantum': expected one of auto"),
    ("accelerator-tpu", ("trainer.accelerator=tpu",), r"^trainer\.accelerator=tpu: not supported"),
    ("log-every-zero", ("trainer.log_every_n_steps=0",), r"^trainer\.log_every_n_steps=0: expected an integer >= 1$"),
    ("sanity-steps", ("trainer.num_sanity_val_steps=-2",), r"^trainer\.num_sanity_val_steps=-2: expected an integer >= -1$"),
    ("max-epochs-negative", ("+trainer.max_epochs=-5",), r"^trainer\.max_epochs=-5: expected an integer >= -1$"),
    ("max-steps-negative", ("+trainer.max_steps=-3",), r"^trainer\.max_steps=-3: expected an integer >= -1$"),
    ("min-epochs-negative", ("+trainer.min_epochs=-1",), r"^trainer\.min_epochs=-1: expected an integer >= 0$"),
    ("val-check-zero", ("trainer.val_check_interval=0",), r"^trainer\.val_check_interval=0: expected a batch count"),
    ("val-check-above-one", ("trainer.val_check_interval=1.5",), r"^trainer\.val_check_interval=1\.5: expected"),
    ("val-check-replaced", ("target.val_check_every=10", "trainer.val_check_interval=0.5"),
     r"^trainer\.val_check_interval=0\.5: target\.val_check_every=10 sets when target validates"),
    ("limit-train-negative", ("+trainer.limit_train_batches=-1",), r"^trainer\.limit_train_batches=-1: expected a count"),
    ("limit-val-fraction", ("+trainer.limit_val_batches=2.5",), r"^trainer\.limit_val_batches=2\.5: expected"),
    ("overfit-one", ("+trainer.overfit_batches=1.0",), r"^trainer\.overfit_batches=1\.0: expected"),
    ("fast-dev-run-negative", ("+trainer.fast_dev_run=-1",), r"^trainer\.fast_dev_run=-1: expected true, false or"),
    ("progress-bar-string", ("trainer.enable_progress_bar=maybe",), r"^trainer\.enable_progress_bar='maybe': expected true or false$"),
    ("deterministic-string", ("+trainer.deterministic=sometimes",), r"^trainer\.deterministic='sometimes': expected true, false or warn$"),
    ("check-val-every-zero", ("+trainer.check_val_every_n_epoch=0",), r"^trainer\.check_val_every_n_epoch=0: expected"),
    ("trainer-unknown-arg", ("+trainer.max_epoch=3",), r"^trainer\.max_epoch: not an argument of pytorch_lightning\.Trainer$"),
    ("trainer-derived-arg", ("+trainer.precision=16",), r"^trainer\.precision: set by the run from scale"),
    ("train-task-other-head", ("target.train_task=udpos",),
     r"^target\.train_task=udpos: a tagging task, but xnli is classification \(its own training task: mnli\)$"),
    ("train-task-other-labels", ("target.train_task=pawsx",), r"^target\.train_task=pawsx: labels \["),
    ("train-task-unknown", ("target.train_task=nli9",), r"nli9"),
    ("cache-dir-is-a-file", (f"data.cache_dir={README}",), r"^data\.cache_dir=.*README\.md: is a file; expected a directory$"),
    ("cache-dir-under-a-file", (f"data.cache_dir={README}/cache",), r"^data\.cache_dir=.*: is under .*README\.md, which is a file"),
    ("data-source-unknown", ("data.source=ftp",), r"^data\.source='ftp': expected one of auto, local, hub$"),
    ("num-workers-negative", ("data.num_workers=-1",), r"^data\.num_workers=-1: expected >= 0$"),
    ("logger-kind-unknown", ("logger.kind=mlflow",), r"^logger\.kind='mlflow': expected one of"),
    ("logger-mode-unknown", ("+logger.mode=sometimes",), r"^logger\.mode='sometimes': expected one of"),
    ("adam-epsilon-zero", ("optim.adam_epsilon=0",), r"^optim\.adam_epsilon=0\.0: expected > 0$"),
    ("weight-decay-negative", ("optim.weight_decay=-0.1",), r"^optim\.weight_decay=-0\.1: expected >= 0$"),
    ("max-grad-norm-nan", ("optim.max_grad_norm=nan",), r"^optim\.max_grad_norm=nan: expected >= 0$"),
    ("val-subset-zero", ("target.val_subset=0",), r"^target\.val_subset=0: expected >= 1 or null$"),
    ("patience-zero", ("target.patience=0",), r"^target\.patience=0: expected >= 1 or null$"),
    ("val-check-every-zero", ("target.val_check_every=0",), r"^target\.val_check_every=0: expected >= 1 or null$"),
    ("epochs-text", ("target.epochs=two",), r"^config option 'target\.epochs'"),
    ("retrieval-layer-past-model", ("retrieval.layer=5",), r"^retrieval\.layer=5: the model has 2 layers$"),
    ("retrieval-batch-zero", ("retrieval.batch_size=0",), r"^retrieval\.batch_size=0: expected >= 1$"),
    ("probe-unknown-language", ("probe.tasks=[tatoeba]", "probe.languages=[xx]"),
     r"^probe\.languages: 'xx' is not a language of tatoeba$"),
    ("probe-unknown-task", ("probe.tasks=[nope]",), r"nope"),
    ("mixture-key-on-single-task", ("+target.only=[xnli]",), r"^target\.only: only for mixture stages"),
    ("target-unknown-key", ("+target.learning_rate=1e-5",), r"learning_rate"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,expect", [c[1:] for c in KEY_CASES], ids=[c[0] for c in KEY_CASES])
def test_every_key_is_validated_before_anything_is_built(
    compose_cfg, tmp_path: Path, overrides, expect
) -> None:
    from xlt.orchestration.run import run

    cfg = compose_cfg(*XNLI_RUN, *overrides)
    with pytest.raises(ConfigError) as err:
        run(cfg, tmp_path / "run")
    assert re.search(expect, one_line(str(err.value))), str(err.value)
    assert not (tmp_path / "run").exists()  # not even the run directory


def test_accelerator_gpu_without_a_gpu(compose_cfg, tmp_path: Path) -> None:
    import torch

    from xlt.config import validate

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match=r"^trainer\.accelerator=gpu: this machine has no usable CUDA GPU"):
        validate(compose_cfg(*XNLI_RUN, "trainer.accelerator=gpu"))


# -- 2. xlt.train's main: Hydra's own errors and validation, one line on stderr, exit 2 -------------

TRAIN_CASES = [
    ("unknown-model", ("model=nope", "+target=xnli"),
     r"^error: .*Could not find 'model/nope'; valid choices in 'model': e5_small, .*tiny, tiny_qwen, tiny_xl, xlmr_base"),
    ("unknown-target", ("+target=nope",), r"^error: .*Could not find 'target/nope'; valid choices in 'target': bucc2018"),
    ("unknown-scale", ("+target=xnli", "scale=huge"), r"^error: .*Could not find 'scale/huge'; valid choices in 'scale'"),
    ("unknown-logger", ("+target=xnli", "logger=mlflow"), r"^error: .*Could not find 'logger/mlflow'; valid choices in 'logger': csv, none, wandb$"),
    ("target-without-plus", ("target=xnli",), r"^error: Could not override 'target'\. No match in the defaults list.*add a key"),
    ("bad-override-syntax", ("+target=xnli", "target.lr=["), r"^error: target\.lr=\[: bad override syntax"),
    ("unknown-key", ("+target=xnli", "epochs=3"), r"^error: epochs: no such config key"),
    ("unknown-nested-key", ("+target=xnli", "model.layers=3"), r"^error: model\.layers: no such config key"),
    ("no-target", ("model=tiny",), r"^error: no target task: add \+target=NAME"),
    ("validation", ("model=tiny", "+target=xnli", "seed=-1"), r"^error: seed=-1: expected an integer"),
]  # fmt: skip


@pytest.mark.parametrize("args,expect", [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_train_main_one_line_exit_2(tmp_path: Path, monkeypatch, capsys, args, expect) -> None:
    from xlt import train
    from xlt.train import main

    # As under `python -m xlt.train` (the module is __main__): Hydra finds ../conf beside the file.
    monkeypatch.setattr(train.hydra_main.__wrapped__, "__module__", "__main__")
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["xlt.train", "logger=none", f"hydra.run.dir={run_dir}", *args])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "")  # recorded, so that what main() sets is undone after the test
    monkeypatch.delenv("HYDRA_FULL_ERROR")
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    line = only_error_line(capsys.readouterr().err)
    assert re.search(expect, line), line
    assert not any((run_dir / name).exists() for name in TRUSTED)


def test_train_subprocess_hydra_error_one_line_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "xlt.train", "model=tni", "+target=xnli", f"hydra.run.dir={tmp_path}"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = only_error_line(proc.stderr)
    assert re.search(r"Could not find 'model/tni'; valid choices in 'model': .*tiny", line), line


# -- 3. a run directory someone touched ---------------------------------------------------------------


def _finished_run(compose_cfg, run_dir: Path, state: object = None) -> object:
    """A run directory whose config.yaml matches ``XNLI_RUN``, finished, with a complete results file."""
    from xlt.config import validate
    from xlt.public_config import public_yaml
    from xlt.results.rows import END_MARKER, _checksum

    cfg = compose_cfg(*XNLI_RUN)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(public_yaml(validate(cfg)))
    (run_dir / "state.json").write_text(json.dumps(state if state is not None else {"finished": True, "skipped": [],
                                        "stages": {"target": {"best": "checkpoints/target/best.ckpt"}}}))  # fmt: skip
    rows = [json.dumps({"stage": "target", "task": "xnli", "split": "test", "language": lang, "metric": "acc",
                        "value": value, "n_examples": 5, "note": ""}, sort_keys=True)
            for lang, value in (("en", 0.6), ("de", 0.5))]  # fmt: skip
    marker = json.dumps({END_MARKER: True, "rows": len(rows), "sha256": _checksum(rows)}, sort_keys=True)
    (run_dir / "results.jsonl").write_text("\n".join([*rows, marker]) + "\n")
    return cfg


def _cut(path: Path) -> None:
    path.write_text(path.read_text().splitlines(keepends=True)[0])


RUN_DIR_CASES = [
    ("state-not-json", lambda d: (d / "state.json").write_text('{"stages": {"target": '), r"state\.json:1: not valid JSON"),
    ("state-a-list", lambda d: (d / "state.json").write_text("[1, 2]"), r"state\.json: expected a JSON object"),
    ("state-binary", lambda d: (d / "state.json").write_bytes(b"\xff\xfe\x00garbage"), r"state\.json: not UTF-8 text"),
    ("state-stages-not-object", lambda d: (d / "state.json").write_text('{"stages": [1]}'), r"state\.json: expected a JSON object with a 'stages' object"),
    ("config-unparsable", lambda d: (d / "config.yaml").write_text("model: [tiny\n  name: x\n"), r"config\.yaml:\d+: not a readable config"),
    ("config-a-list", lambda d: (d / "config.yaml").write_text("- 1\n- 2\n"), r"config\.yaml: expected a mapping"),
    ("config-deleted", lambda d: (d / "config.yaml").unlink(), r"holds an earlier launch's work but no config\.yaml"),
    ("config-other-seed", lambda d: (d / "config.yaml").write_text((d / "config.yaml").read_text().replace("seed: 42", "seed: 7")),
     r"belongs to another configuration: seed differ"),
    ("results-cut", lambda d: _cut(d / "results.jsonl"), r"results\.jsonl: incomplete .*; rerun with resume=false"),
    ("results-edited", lambda d: (d / "results.jsonl").write_text((d / "results.jsonl").read_text().replace("0.6", "0.9", 1)),
     r"results\.jsonl: altered: .*rerun with resume=false"),
    ("results-garbage-line", lambda d: (d / "results.jsonl").write_text("{not json\n"), r"results\.jsonl:1: not a JSON object"),
]  # fmt: skip


@pytest.mark.parametrize("touch,expect", [c[1:] for c in RUN_DIR_CASES], ids=[c[0] for c in RUN_DIR_CASES])
def test_touched_run_directory_is_one_line(compose_cfg, tmp_path: Path, capsys, touch, expect) -> None:
    from xlt.orchestration.run import run

    run_dir = tmp_path / "run"
    cfg = _finished_run(compose_cfg, run_dir)
    touch(run_dir)
    with pytest.raises(ValueError) as err:
        run(cfg, run_dir)
    assert re.search(expect, one_line(str(err.value))), str(err.value)
    assert "Results" not in capsys.readouterr().out  # no table of old results printed


def test_relaunch_with_config_deleted_and_another_seed_prints_no_old_results(
    compose_cfg, tmp_path: Path, capsys
) -> None:
    from xlt.orchestration.run import run

    run_dir = tmp_path / "run"
    _finished_run(compose_cfg, run_dir)
    (run_dir / "config.yaml").unlink()
    with pytest.raises(ValueError, match="no config.yaml"):
        run(compose_cfg(*XNLI_RUN, "seed=7"), run_dir)
    assert "0.6" not in capsys.readouterr().out


def test_resume_false_starts_over_a_broken_state(compose_cfg, tmp_path: Path) -> None:
    from xlt.config import validate
    from xlt.orchestration.plan import build_plan
    from xlt.orchestration.run import _run_locked

    def run_locked(cfg) -> None:
        _run_locked(build_plan(cfg, run_dir, None), None)

    run_dir = tmp_path / "run"
    _finished_run(compose_cfg, run_dir)
    (run_dir / "state.json").write_text("{broken")
    cfg = validate(compose_cfg(*XNLI_RUN, "resume=false", "data.source=local", f"data.dir={tmp_path}"))
    with pytest.raises(DataError):  # past the state: the (absent) data is what stops it
        run_locked(cfg)
    (run_dir / "state.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"state\.json:1: not valid JSON"):  # resume=true: one line
        run_locked(validate(compose_cfg(*XNLI_RUN)))


_HOLD = """
import sys, time
from pathlib import Path
from xlt.orchestration.rundir import run_dir_lock
with run_dir_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_process_in_a_run_directory_stops_in_one_line(compose_cfg, tmp_path: Path) -> None:
    import socket

    from xlt.orchestration.run import run
    from xlt.orchestration.rundir import RunDirError

    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError) as err:
            run(compose_cfg(*XNLI_RUN), run_dir)
        line = one_line(str(err.value))
        assert f"pid {holder.pid} on host {socket.gethostname()}" in line and str(run_dir) in line, line
        assert not any((run_dir / name).exists() for name in TRUSTED)
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone (killed: its lock file still names it): the next run takes the lock over.
    from xlt.orchestration.rundir import LOCK_FILE, run_dir_lock

    assert str(holder.pid) in (run_dir / LOCK_FILE).read_text()
    with run_dir_lock(run_dir):
        assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert (run_dir / LOCK_FILE).read_text() == ""


def test_moved_run_directory_finds_its_checkpoints(tmp_path: Path) -> None:
    from xlt.orchestration.rundir import RunState

    old = tmp_path / "old"
    ckpt = old / "checkpoints" / "target" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    state = RunState(old / "state.json")
    state.mark_stage("target", best=str(ckpt), task="xnli")
    assert (
        json.loads((old / "state.json").read_text())["stages"]["target"]["best"]
        == "checkpoints/target/best.ckpt"
    )
    new = tmp_path / "elsewhere" / "new"
    new.parent.mkdir()
    old.rename(new)
    assert RunState.load(new / "state.json").stage("target")["best"] == str(
        new / "checkpoints/target/best.ckpt"
    )
    # A state.json of an older version (absolute paths) in a moved directory: found under the new one.
    (new / "state.json").write_text(json.dumps({"stages": {"target": {"best": str(ckpt)}}}))
    assert RunState.load(new / "state.json").stage("target")["best"] == str(
        new / "checkpoints/target/best.ckpt"
    )


# -- 4. the other CLIs' mains: one line on stderr, exit 2 --------------------------------------------


def _fake_run(tmp_path: Path, state: str | None = '{"stages": {"target": {"best": "checkpoints/target/best.ckpt"}}}',
              config: str | None = "target:\n  name: xnli\nmodel:\n  name: tiny\n") -> Path:  # fmt: skip
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if config is not None:
        (run_dir / "config.yaml").write_text(config)
    if state is not None:
        (run_dir / "state.json").write_text(state)
    return run_dir


def _evaluate(argv: list[str]) -> int:
    from xlt.evaluate import main

    return main(argv)


def _export(argv: list[str]) -> int:
    from xlt.export import main

    return main(argv)


CLI_CASES = [
    # (id, main, argv made from tmp_path, expected line)
    ("evaluate-missing", _evaluate, lambda t: [str(t / "nothing"), "--out", str(t / "o")], r"^xlt\.evaluate: .*nothing: no such run directory"),
    ("evaluate-no-config", _evaluate, lambda t: [str(_fake_run(t, config=None)), "--out", str(t / "o")], r"no config\.yaml: not an xlt run directory"),
    ("evaluate-state-corrupt", _evaluate, lambda t: [str(_fake_run(t, state="{'stages': 1}")), "--out", str(t / "o")],
     r"^xlt\.evaluate: .*state\.json:1: not valid JSON \(Expecting property name"),
    ("evaluate-no-target-stage", _evaluate, lambda t: [str(_fake_run(t, state='{"stages": {}}')), "--out", str(t / "o")],
     r"the target stage has not finished"),
    ("evaluate-checkpoint-missing", _evaluate, lambda t: [str(_fake_run(t)), "--out", str(t / "o")], r"best\.ckpt: the target stage's checkpoint is missing"),
    ("evaluate-config-unparsable", _evaluate, lambda t: [str(_fake_run(t, config="target: [x\n")), "--out", str(t / "o")],
     r"config\.yaml:\d+: not a readable config"),
    ("evaluate-config-not-a-run", _evaluate, lambda t: [str(_fake_run(t, config="just: text\n")), "--out", str(t / "o")],
     r"config\.yaml: expected a run's config"),
    ("evaluate-not-a-target-checkpoint", _evaluate, lambda t: [str(_ckpt(t, "intermediate")), "--out", str(t / "o")],
     r"not a target-stage checkpoint"),
    ("export-missing", _export, lambda t: [str(t / "nothing")], r"^xlt\.export: .*nothing: no config\.yaml"),
    ("export-state-corrupt", _export, lambda t: [str(_fake_run(t, state="{"))], r"^xlt\.export: .*state\.json:1: not valid JSON"),
    ("export-no-target-stage", _export, lambda t: [str(_fake_run(t, state="{}"))], r"the target stage has not finished"),
    ("export-checkpoint-missing", _export, lambda t: [str(_fake_run(t))], r"best\.ckpt: the target stage's checkpoint is missing"),
    ("export-config-unparsable", _export, lambda t: [str(_fake_run(t, config="model: {a: [\n"))], r"config\.yaml:\d+: not a readable config"),
    ("export-retrieval-target", _export, lambda t: [str(_fake_run(t, config="target:\n  name: tatoeba\n"))], r"trains no head; nothing fine-tuned"),
    ("export-config-lacks-keys", _export, lambda t: [str(_ckpt(t, "target").parents[2])],
     r"^xlt\.export: .*config\.yaml: (data|model)\.\w+: no value \(a mandatory key, as are \d+ more"),
    ("export-unknown-target", _export, lambda t: [str(_fake_run(t, config="target:\n  name: nope\n"))], r"nope"),
]  # fmt: skip


def _ckpt(tmp_path: Path, stage: str) -> Path:
    path = _fake_run(tmp_path) / "checkpoints" / stage / "best.ckpt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("main,make,expect", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_main_one_line_exit_2(tmp_path: Path, capsys, main, make, expect) -> None:
    argv = make(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    line = only_error_line(capsys.readouterr().err)
    assert re.search(expect, line), line
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_evaluate_override_without_equals_and_out_a_file(compose_cfg, tmp_path: Path, capsys) -> None:
    from xlt.evaluate import main

    run_dir = tmp_path / "run"
    _finished_run(compose_cfg, run_dir)
    ckpt = run_dir / "checkpoints" / "target" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    out_file = tmp_path / "out.txt"
    out_file.write_text("x")
    for argv, expect in (
        (
            [str(run_dir), "--out", str(tmp_path / "o"), "logger.kind"],
            r"override 'logger\.kind': expected key=value",
        ),
        ([str(run_dir), "--out", str(tmp_path / "o"), "=none"], r"override '=none': expected key=value"),
        ([str(run_dir), "--out", str(out_file)], r"--out .*out\.txt: is a file; expected a directory"),
        (
            [str(run_dir), "--out", str(out_file / "sub")],
            r"--out .*sub: is under .*out\.txt, which is a file",
        ),
        (
            [str(run_dir), "--out", str(tmp_path / "o"), "seed=-1"],
            r"^xlt\.evaluate: seed=-1: expected an integer",
        ),
    ):
        assert main(argv) == 2, argv
        line = only_error_line(capsys.readouterr().err)
        assert re.search(expect, line), line
    assert not (tmp_path / "o").exists()


def test_export_out_a_file(compose_cfg, tmp_path: Path, capsys) -> None:
    from xlt.export import main

    run_dir = tmp_path / "run"
    _finished_run(compose_cfg, run_dir)
    ckpt = run_dir / "checkpoints" / "target" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    out_file = tmp_path / "out.txt"
    out_file.write_text("x")
    assert main([str(run_dir), "--out", str(out_file)]) == 2
    assert re.search(r"^xlt\.export: --out .*out\.txt: is a file", only_error_line(capsys.readouterr().err))


def test_results_score_plan_audit_mains(tmp_path: Path, capsys) -> None:
    from xlt.audit.cli import main as audit_main
    from xlt.plan.cli import main as plan_main
    from xlt.results.__main__ import main as results_main
    from xlt.score import main as score_main

    out_file = tmp_path / "out.txt"
    out_file.write_text("x")
    (tmp_path / "sweep").mkdir()
    cases = [
        (results_main, [str(tmp_path / "absent")], r"^error: .*absent: no such directory"),
        (results_main, [str(tmp_path / "sweep"), "--out", str(out_file)], r"^error: --out .*out\.txt: is a file"),
        (results_main, [str(tmp_path / "sweep"), "--out", str(out_file / "x")], r"^error: --out .*: is under"),
        (score_main, ["--predictions", str(tmp_path / "p"), "--labels", str(tmp_path / "l"), "--tasks", "pawsx"], r"^error: "),
        (score_main, ["--predictions", str(tmp_path), "--labels", str(tmp_path), "--tasks", "nope"], r"^error: .*nope"),
        (plan_main, ["model=nope", "+target=xnli"], r"^xlt\.plan: .*Could not find 'model/nope'; valid choices"),
        (plan_main, ["+target=xnli", "seed=-1"], r"^xlt\.plan: seed=-1: expected"),
        (plan_main, ["+target=xnli", "target.lr=["], r"^xlt\.plan: target\.lr=\[: bad override syntax"),
        (audit_main, ["+target=nope"], r"^error: .*Could not find 'target/nope'; valid choices"),
        (audit_main, ["+target=xnli", "model.num_layers=0"], r"^error: model\.num_layers=0: expected"),
        (audit_main, ["+target=xnli", "data.dir=/nonexistent/xlt"], r"^error: data\.dir=/nonexistent/xlt: no such directory"),
    ]  # fmt: skip
    for main, argv, expect in cases:
        capsys.readouterr()
        assert main(argv) == 2, (main.__module__, argv)
        line = only_error_line(capsys.readouterr().err)
        assert re.search(expect, line), (argv, line)


def test_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys) -> None:
    from xlt.utils.console import run_cli

    def broken() -> int:
        return {}["missing"]

    assert run_cli(broken) == 2
    line = only_error_line(capsys.readouterr().err)
    assert line == "error: KeyError: 'missing' (unexpected; XLT_DEBUG=1 shows the traceback)"
    monkeypatch.setenv("XLT_DEBUG", "1")
    with pytest.raises(KeyError):
        run_cli(broken)


# -- 5. readers: duplicates and structural oddities, one line with file and line ---------------------


def _xquad_dup(data: Path) -> str:
    content = json.loads((data / "xquad/xquad.en.json").read_text(encoding="utf-8"))
    content["data"] = content["data"][:1]
    qas = content["data"][0]["paragraphs"][1]["qas"]
    qas[0]["id"] = content["data"][0]["paragraphs"][0]["qas"][2]["id"]
    return json.dumps(content, ensure_ascii=False, indent=1)


def _conllu(data: Path, n: int = 60) -> str:
    text = "".join((data / "ud_pos/UD_English-EWT/en_ewt-ud-test.conllu").read_text(encoding="utf-8")
                   .splitlines(keepends=True)[:n])  # fmt: skip
    return text[: text.rindex("\n\n") + 2]


def _token_lines(text: str) -> list[int]:
    return [i for i, line in enumerate(text.split("\n"), 1) if line and not line.startswith("#")]


def _edit_line(text: str, number: int, edit) -> str:
    lines = text.split("\n")
    lines[number - 1] = edit(lines[number - 1])
    return "\n".join(lines)


def _conllu_repeat_id(data: Path) -> str:
    text = _conllu(data)
    third = _token_lines(text)[2]
    return _edit_line(text, third, lambda s: "2" + s[s.index("\t") :])


def _conllu_no_break(data: Path) -> str:
    text = _conllu(data)
    first_break = text.index("\n\n")
    rest = text[first_break + 2 :]
    rest = "\n".join(line for line in rest.split("\n") if not line.startswith("#"))
    return text[: first_break + 1] + rest


def _conllu_comment_inside(data: Path) -> str:
    text = _conllu(data)
    first_break = text.index("\n\n")
    return text[:first_break] + "\n" + text[first_break + 2 :]


def _conllu_gap(data: Path) -> str:
    text = _conllu(data)
    third = _token_lines(text)[2]
    lines = text.split("\n")
    del lines[third - 1]
    return "\n".join(lines)


def _conllu_head_out(data: Path) -> str:
    text = _conllu(data)
    first = _token_lines(text)[0]
    return _edit_line(
        text, first, lambda s: "\t".join(c if i != 6 else "99" for i, c in enumerate(s.split("\t")))
    )


def _mwt_reversed(data: Path) -> str:
    text = _conllu(data)
    first = _token_lines(text)[0]
    lines = text.split("\n")
    lines.insert(first - 1, "2-1\tcan't\t_\t_\t_\t_\t_\t_\t_\t_")
    return "\n".join(lines)


SQUAD2 = "squad_v2.0/hf_dummy/dev-v2.0.json"


def _squad2_dup(data: Path) -> str:
    content = json.loads((data / SQUAD2).read_text(encoding="utf-8"))
    qas = [q for a in content["data"] for p in a["paragraphs"] for q in p["qas"]]
    qas[-1]["id"] = qas[0]["id"]
    return json.dumps(content, ensure_ascii=False, indent=1)


BUCC = "bucc2018/tfds_dummy/fr-en/fr-en.sample"

READER_CASES = [
    # (id, task, split, lang, rel, make, siblings, expected after the file name)
    ("xquad-duplicate-id", "xquad", "test", "en", "xquad/xquad.en.json", _xquad_dup, [],
     r":\d+: article 0 paragraph 1: question id '[0-9a-f]+' repeats the id of article 0 paragraph 0"),
    ("mlqa-duplicate-id", "mlqa", "dev", "de", "mlqa/dev/dev-context-de-question-de.json", _xquad_dup, [],
     r"question id .* repeats"),
    ("squad2-duplicate-id", "squad2", "dev", "en", "squad/dev-v2.0.json", _squad2_dup, [], r"question id .* repeats"),
    ("conllu-repeated-id", "udpos", "test", "en", "ud_pos/UD_English-EWT/en_ewt-ud-test.conllu", _conllu_repeat_id, [],
     r":\d+: token id 2 repeats line \d+$"),
    ("conllu-missing-break", "udpos", "test", "en", "ud_pos/UD_English-EWT/en_ewt-ud-test.conllu", _conllu_no_break, [],
     r":\d+: token id 1 repeats line \d+ \(a missing blank line between two sentences\?\)"),
    ("conllu-comment-inside", "udpos", "test", "en", "ud_pos/UD_English-EWT/en_ewt-ud-test.conllu", _conllu_comment_inside,
     [], r":\d+: a comment line inside a sentence"),
    ("conllu-id-gap", "udpos", "test", "en", "ud_pos/UD_English-EWT/en_ewt-ud-test.conllu", _conllu_gap, [],
     r":\d+: token id 4 where 3 was expected"),
    ("conllu-head-outside", "udpos", "test", "en", "ud_pos/UD_English-EWT/en_ewt-ud-test.conllu", _conllu_head_out, [],
     r":\d+: head 99 is not a token of the sentence"),
    ("conllu-mwt-reversed", "udpos", "test", "en", "ud_pos/UD_English-EWT/en_ewt-ud-test.conllu", _mwt_reversed, [],
     r":\d+: multi-word token 2-1: expected first < last"),
    ("bucc-gold-repeated-pair", "bucc2018", "dev", "fr", "bucc2018/fr-en.dev.gold",
     lambda d: (d / f"{BUCC}.gold").read_text().rstrip("\n") + "\n" + (d / f"{BUCC}.gold").read_text(),
     [("bucc2018/fr-en.dev.fr", f"{BUCC}.fr"), ("bucc2018/fr-en.dev.en", f"{BUCC}.en")], r":\d+: the pair .* repeats line 1"),
    ("snli-labels-empty", "snli", "dev", "en", "snli/esnli_tokenized/labels.dev", lambda d: b"",
     [("snli/esnli_tokenized/s1.dev", "snli/esnli_tokenized/s1.dev"), ("snli/esnli_tokenized/s2.dev", "snli/esnli_tokenized/s2.dev")],
     r": empty file \(line-aligned with .*s1\.dev"),
    ("snli-hypotheses-empty", "snli", "dev", "en", "snli/esnli_tokenized/s2.dev", lambda d: "",
     [("snli/esnli_tokenized/s1.dev", "snli/esnli_tokenized/s1.dev"), ("snli/esnli_tokenized/labels.dev", "snli/esnli_tokenized/labels.dev")],
     r": empty file"),
]  # fmt: skip


@pytest.mark.parametrize("task,split,lang,rel,make,siblings,expect", [c[1:] for c in READER_CASES],
                         ids=[c[0] for c in READER_CASES])  # fmt: skip
def test_reader_refuses_duplicates_and_oddities(data_dir: Path, tmp_path: Path, task, split, lang, rel, make,
                                                siblings, expect) -> None:  # fmt: skip
    root = tmp_path / "data"
    bad = root / rel
    bad.parent.mkdir(parents=True, exist_ok=True)
    content = make(data_dir)
    bad.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    for sib_rel, source in siblings:
        (root / sib_rel).parent.mkdir(parents=True, exist_ok=True)
        lines = (data_dir / source).read_text(encoding="utf-8").splitlines(keepends=True)[:10]
        (root / sib_rel).write_text("".join(lines), encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_split(get_task(task), split, lang, "local", root)
    message = one_line(str(err.value))
    assert message.startswith(str(bad)), message
    assert re.search(expect, message[len(str(bad)) :]), message


@pytest.mark.parametrize(
    "content,expect",
    [
        ({"weights": {}}, r"holds no state_dict \(not a checkpoint of this run\)"),
        ({"state_dict": {"weight": "x"}}, r"not a loadable checkpoint|does not fit this run's model"),
        ({"state_dict": {}}, r"does not fit this run's model \(Missing key"),
    ],
    ids=["no-state-dict", "not-tensors", "other-shapes"],
)
def test_checkpoint_of_another_kind_is_one_line(tmp_path: Path, content, expect) -> None:
    import torch

    from xlt.orchestration.rundir import CheckpointError
    from xlt.orchestration.weights import load_weights

    path = tmp_path / "best.ckpt"
    if content == {"state_dict": {}}:
        content = {"state_dict": {"weight": torch.zeros(3, 3), "bias": torch.zeros(3)}}
        expect = r"does not fit this run's model \(size mismatch"
    torch.save(content, path)
    with pytest.raises(CheckpointError) as err:
        load_weights(torch.nn.Linear(2, 2), path)
    assert re.search(expect, one_line(str(err.value))), str(err.value)
