"""Sweeps (conf/sweep/*) and relaunching them: the study expands to the expected jobs, each in a
folder named from its overrides; the launchers map the scale profile; a finished sweep runs
nothing when relaunched; a killed job resumes from its checkpoint with the same numbers as an
uninterrupted one; and the resume machinery (step checkpoints, RNG state) underneath."""

from __future__ import annotations

import csv
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from xlt import PROJECT_ROOT
from xlt.config import validate
from xlt.schema import CONF_DIR, group_choices
from xlt.training.callbacks import RngStateInCheckpoint, StepCheckpoint


def compose_hydra(*overrides: str) -> DictConfig:
    """The composed config with its ``hydra`` node, as a job of the sweep would get it."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def expand(sweep: str, *cli: str) -> list[list[str]]:
    """The jobs' override lists, as Hydra's basic sweeper builds them: the sweep's
    ``hydra.sweeper.params`` first, then the command line; the Cartesian product of the swept values."""
    cfg = compose_hydra(f"+sweep={sweep}", *cli)
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    parsed = OverridesParser.create().parse_overrides([*params, f"+sweep={sweep}", *cli])
    final: dict[str, list[str]] = {}
    for override in parsed:  # a later override of the same key replaces an earlier one
        key = override.get_key_element()
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        final[key] = [f"{key}={v}" for v in values]
    return [list(job) for job in itertools.product(*final.values())]


def job_config(job: list[str], cache_dir: Path) -> tuple[DictConfig, DictConfig]:
    """(validated job config, its hydra node) for one job's overrides."""
    cfg = compose_hydra(*job, f"data.cache_dir={cache_dir}")
    hydra = cfg.hydra
    job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return validate(job_cfg), hydra


def test_every_sweep_file_names_its_study() -> None:
    assert {"scale_gap", "scale_gap_xnli", "demo_scale_gap"} <= set(group_choices("sweep"))


MODELS = ["xlmr_base", "xlmr_large", "xlmr_xl", "xlmr_xxl", "qwen2_5_3b", "qwen2_5_7b"]
XTREME = ["xnli", "pawsx", "udpos", "panx", "xquad", "mlqa", "tydiqa", "bucc2018", "tatoeba"]


def test_scale_gap_covers_xtreme(cache_dir: Path) -> None:
    """The study is XTREME-wide by default: 6 models x 3 intermediates x 9 targets x 3 seeds = 486 jobs
    (the number docs/sweeps.md gives); one job per target is composed and validated here."""
    jobs = expand("scale_gap")
    assert len(jobs) == 486 == len(MODELS) * 3 * len(XTREME) * 3
    keys = {tuple(sorted(job)) for job in jobs}
    assert len(keys) == 486  # distinct override sets: one folder each
    targets: dict[str, tuple[bool, str]] = {}
    for job in jobs:
        if "model=xlmr_large" in job and "intermediate=mnli" in job and "seed=1" in job:
            cfg, hydra = job_config(job, cache_dir)
            from xlt.tasks.registry import get_task

            spec = get_task(cfg.target.name)
            targets[cfg.target.name] = (spec.trainable, hydra.sweep.dir)
    assert list(targets) == XTREME
    assert {name for name, (trainable, _) in targets.items() if not trainable} == {"tatoeba", "bucc2018"}
    assert {d for _, d in targets.values()} == {"multirun/scale_gap"}


def test_scale_gap_xnli_is_models_x_intermediates_x_seeds(cache_dir: Path) -> None:
    jobs = expand("scale_gap_xnli")
    models = MODELS
    assert len(jobs) == len(models) * 3 * 1 * 3 == 54
    seen, dirs = set(), set()
    for job in jobs:
        cfg, hydra = job_config(job, cache_dir)
        intermediate = cfg.intermediate.name if cfg.intermediate is not None else "none"
        seen.add((cfg.model.name, intermediate, cfg.target.name, cfg.seed))
        dirs.add(hydra.job.override_dirname)
        assert hydra.sweep.dir == "multirun/scale_gap_xnli"
        assert (
            hydra.job.override_dirname
            == f"intermediate={intermediate},model={cfg.model.name},seed={cfg.seed},target=xnli"
        )
        assert (
            cfg.logger.group == "scale_gap_xnli"
            and "scale_gap_xnli" in cfg.logger.tags
            and cfg.logger.kind == "wandb"
        )
        # each model's own profile: DDP for base/large, FSDP (+ activation checkpointing) from XL up
        assert cfg.scale.name == cfg.model.name and cfg.target.train_task == "mnli"
        strategy = cfg.scale.strategy if isinstance(cfg.scale.strategy, str) else cfg.scale.strategy._target_
        expected = (
            "ddp"
            if cfg.model.name in ("xlmr_base", "xlmr_large")
            else "xlt.training.strategies.FSDP"  # Lightning's FSDPStrategy, CPU-capable (xlt/training/strategies.py)
        )
        assert strategy == expected and cfg.scale.devices == 4
    # intermediate=anli is ANLI+ (a mixture: SNLI + MNLI + ANLI rounds on one NLI head)
    assert seen == set(itertools.product(models, ["none", "mnli", "anli"], ["xnli"], [1, 2, 3]))
    assert len(dirs) == 54  # one folder per job: a relaunch finds each job's own state


def test_an_axis_narrowed_on_the_command_line_keeps_the_folder_names(cache_dir: Path) -> None:
    jobs = expand("scale_gap", "model=xlmr_base", "seed=1", "target=xnli")
    assert len(jobs) == 3
    cfg, hydra = job_config(jobs[0], cache_dir)
    assert hydra.job.override_dirname == "intermediate=none,model=xlmr_base,seed=1,target=xnli"
    assert cfg.scale.name == "xlmr_base"
    cfg, hydra = job_config(expand("scale_gap", "model=xlmr_base", "seed=1", "scale=fsdp", "target=xnli")[0],
                            cache_dir)  # fmt: skip
    assert cfg.scale.name == "fsdp" and "scale=fsdp" in hydra.job.override_dirname


def test_demo_sweep_is_two_e5_sizes_x_none_or_anli_x_two_targets_x_two_seeds(cache_dir: Path) -> None:
    jobs = expand("demo_scale_gap")
    assert len(jobs) == 16
    for job in jobs:
        cfg, hydra = job_config(job, cache_dir)
        assert cfg.model.name in ("e5_small", "e5_small_6l") and cfg.seed in (1, 2)
        assert cfg.model.pooling == "mean"  # both sizes pool as e5 was trained: only the depth differs
        assert hydra.sweep.dir == "multirun/demo_scale_gap" and cfg.logger.kind == "csv"
        # the sweep's caps win over the task files', each target with its own (conf/sweep/demo_target/)
        if cfg.target.name == "xnli":
            assert cfg.target.train_task == "snli" and cfg.target.max_train_examples == 1600
        else:
            assert cfg.target.name == "udpos" and cfg.target.train_task == "udpos"
            assert cfg.target.max_train_examples == 800 and cfg.target.languages == [
                "en",
                "de",
                "ar",
                "hi",
                "zh",
            ]
        assert cfg.target.epochs == 1 and cfg.target.max_eval_examples == 250
        if cfg.intermediate is not None:  # ANLI's rounds alone: ANLI+ has no train data offline
            assert hydra.runtime.choices.intermediate == "anli_rounds"
            assert cfg.intermediate.name == "anli_rounds" and cfg.intermediate.train_split == "dev_r1+dev_r2"
            assert cfg.intermediate.max_train_examples == 800


def test_intermediate_none_is_the_baseline_even_with_caps_on_top(compose_cfg) -> None:
    cfg = validate(compose_cfg("+intermediate=none", "+target=xnli", "+intermediate.max_train_examples=5"))
    assert cfg.intermediate is None


def test_slurm_launcher_gives_one_task_per_gpu_and_submitit_requeue(tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    (local / "slurm.yaml").write_text("partition: gpu_h100\naccount: xlt_lab\n")
    cfg = compose_hydra("+sweep=scale_gap", "hydra/launcher=slurm", f"hydra.searchpath=[file://{tmp_path}]")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == cfg.scale.devices == 4
    assert launcher.nodes == cfg.scale.num_nodes == 1
    assert (
        launcher.timeout_min > 10 and launcher.max_num_timeout >= 1
    )  # USR2 = preemption; requeue at the limit
    assert (launcher.partition, launcher.account) == ("gpu_h100", "xlt_lab")  # from the git-ignored file
    assert compose_hydra("hydra/launcher=slurm").hydra.launcher.partition is None  # the file is optional


def test_local_launchers(tmp_path: Path) -> None:
    parallel = compose_hydra("hydra/launcher=local_parallel").hydra.launcher
    assert parallel._target_.endswith("JoblibLauncher") and parallel.n_jobs == 2
    assert compose_hydra().hydra.launcher._target_.endswith("BasicLauncher")


def test_local_example_holds_launcher_settings_only() -> None:
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    example = OmegaConf.load(CONF_DIR / "local" / "example.yaml")
    assert set(example) <= set(SlurmQueueConf.__dataclass_fields__)
    ignored = subprocess.run(["git", "check-ignore", "-q", "conf/local/slurm.yaml"], cwd=PROJECT_ROOT)
    assert ignored.returncode == 0, "conf/local/slurm.yaml must be git-ignored"


# ----------------------------------------------------------------------------- resume machinery


class _Linear(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.dropout = torch.nn.Dropout(0.5)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.dropout(self.layer(batch.float().unsqueeze(1))).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(callbacks: list[pl.Callback], tmp_path: Path, max_epochs: int = 3, ckpt: Path | None = None,
         loader: Callable[[], object] | None = None, model: pl.LightningModule | None = None) -> pl.Trainer:  # fmt: skip
    from torch.utils.data import DataLoader

    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, enable_checkpointing=False)  # fmt: skip
    data = loader() if loader else DataLoader(list(range(10)), batch_size=2)
    trainer.fit(model or _Linear(), train_dataloaders=data, ckpt_path=ckpt)
    return trainer


def test_step_checkpoints_skip_each_epochs_last_batch(tmp_path: Path, monkeypatch) -> None:
    saved: list[int] = []
    monkeypatch.setattr(
        pl.Trainer, "save_checkpoint", lambda self, path, *a, **k: saved.append(self.global_step)
    )
    _fit([StepCheckpoint(tmp_path / "last.ckpt", every=2)], tmp_path)  # 5 batches an epoch, 15 steps
    # 10 (the last batch of epoch 2) is left to the checkpoint after that epoch's validation
    assert saved == [2, 4, 6, 8, 12, 14]


def test_rng_state_survives_a_checkpoint(tmp_path: Path) -> None:
    callback = RngStateInCheckpoint()
    torch.manual_seed(3)
    path = tmp_path / "rng.pt"
    torch.save(callback.state_dict(), path)
    expected = (torch.rand(3), __import__("numpy").random.rand(2).tolist(), __import__("random").random())
    torch.rand(5)
    callback.load_state_dict(torch.load(path, weights_only=True))  # as plain data: loads under weights_only
    again = (torch.rand(3), __import__("numpy").random.rand(2).tolist(), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


@pytest.mark.parametrize("stop_at", [3, 7, 12])  # mid-epoch 1, 2 and 3 (5 batches an epoch)
def test_mid_epoch_resume_sees_the_same_batches(tmp_path: Path, stop_at: int) -> None:
    from xlt.data.sampling import LengthGroupedBatchSampler, ResumableDataLoader

    seen: list[list[int]] = []

    class Recording(_Linear):
        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            seen.append(batch.tolist())
            return super().training_step(batch, batch_idx)

    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(
            list(range(10)), batch_sampler=LengthGroupedBatchSampler([1] * 10, 2, True, 7, 0, 1)
        )

    _fit([], tmp_path / "a", loader=loader, model=Recording())
    uninterrupted = list(seen)
    assert len(uninterrupted) == 15 and uninterrupted[:5] != uninterrupted[5:10]  # epochs differ
    seen.clear()
    ckpt = tmp_path / "b" / "last.ckpt"
    trainer = pl.Trainer(max_steps=stop_at, callbacks=[StepCheckpoint(ckpt, every=stop_at)], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
    trainer.fit(Recording(), train_dataloaders=loader())  # stops mid-epoch at step stop_at (saved there)
    assert seen == uninterrupted[:stop_at]
    _fit([], tmp_path / "b", loader=loader, model=Recording(), ckpt=ckpt)
    assert seen == uninterrupted  # the rest of the interrupted epoch, then the later ones, unchanged


def _length_grouped() -> object:
    from xlt.data.sampling import LengthGroupedBatchSampler

    return LengthGroupedBatchSampler([1] * 10, 2, True, 7, 0, 1)


def _multi_task() -> object:
    from xlt.data.sampling import MultiTaskBatchSampler

    return MultiTaskBatchSampler([[1] * 6, [1] * 4], 2, [0.6, 0.4], batches_per_rank=5, seed=7)


@pytest.mark.parametrize("make_sampler", [_length_grouped, _multi_task], ids=["single-task", "mixture"])
def test_resumable_loader_skips_the_consumed_batches_of_its_epoch_only(make_sampler) -> None:
    from torch.utils.data import DataLoader

    from xlt.data.sampling import ResumableDataLoader

    sampler = make_sampler()
    sampler.sampler.set_epoch(1)  # where Lightning's _set_sampler_epoch finds it
    assert sampler.epoch == 1
    full = [b.tolist() for b in DataLoader(list(range(10)), batch_sampler=sampler)]
    sampler.set_epoch(0)
    assert [b.tolist() for b in DataLoader(list(range(10)), batch_sampler=sampler)] != full  # epochs differ
    sampler.set_epoch(1)
    resumable = ResumableDataLoader(list(range(10)), batch_sampler=sampler)

    def batches() -> list[list[int]]:
        return [b.tolist() for b in resumable]

    resumable.load_state_dict({"epoch": 1, "consumed": 2})
    assert batches() == full[2:] and resumable.state_dict() == {"epoch": 1, "consumed": 5}
    assert batches() == full  # the skip applies to the resumed iteration only
    resumable.load_state_dict({"epoch": 0, "consumed": 2})
    assert batches() == full  # a state from another epoch (saved at an epoch's end) skips nothing


# ----------------------------------------------------------------------------- real relaunches

# A small study of its own (a sweep file in a temporary config dir, found through hydra.searchpath):
# its settings live in the file, not on the command line, so the job folders keep short names
# (a folder name is at most 255 bytes, and every command-line override becomes part of it).
TINY_SWEEP = """# @package _global_
defaults:
  - demo_scale_gap
  - _self_
sweep: {name: tiny}
scale: {per_device_batch_size: 8}
target: {train_task: snli, train_split: dev, languages: [en, de], batch_size: 8, max_train_examples: 48,
         max_eval_examples: 24, lr: 1.0e-3, epochs: 6}
trainer: {log_every_n_steps: 1, enable_progress_bar: false}
hydra:
  sweeper:
    params: {model: tiny, intermediate: none, target: xnli, seed: "3"}
"""


def tiny_sweep(tmp_path: Path, body: str = "") -> list[str]:
    """Overrides that select the tiny study (plus ``body``, YAML merged last) in ``tmp_path``."""
    conf = tmp_path / "conf"
    (conf / "sweep").mkdir(parents=True, exist_ok=True)
    (conf / "sweep" / "tiny.yaml").write_text(TINY_SWEEP + body)
    return ["+sweep=tiny", f"hydra.searchpath=[file://{conf}]"]


def multirun(sweep_dir: Path, cache_dir: Path, sweep: list[str], *overrides: str) -> list[str]:
    return [sys.executable, "-m", "xlt.train", "-m", *sweep, *overrides, f"hydra.sweep.dir={sweep_dir}",
            f"data.cache_dir={cache_dir}"]  # fmt: skip


def run_cli(argv: list[str], log: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)
    log.write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.glob("*/.hydra"))


@pytest.mark.slow
def test_relaunching_a_finished_sweep_runs_nothing(data_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    argv = multirun(sweep_dir, cache_dir, tiny_sweep(tmp_path), "seed=1,2", "debug=fdr")
    run_cli(argv, tmp_path / "first.log", timeout=600)
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 2 and all((j / "results.jsonl").is_file() for j in jobs)
    before = {j: (j / "results.jsonl").stat().st_mtime_ns for j in jobs}
    run_cli(argv, tmp_path / "again.log", timeout=600)
    assert job_dirs(sweep_dir) == jobs  # the same folders, no new ones
    for job in jobs:
        assert (job / "results.jsonl").stat().st_mtime_ns == before[job]
        assert "is finished; nothing to do" in (job / "train.log").read_text()


def losses(job: Path) -> dict[int, str]:
    """step -> training loss, as CSVLogger wrote it (exact decimal strings)."""
    with open(job / "csv" / "metrics.csv") as fh:
        return {int(r["step"]): r["train/xnli/loss"] for r in csv.DictReader(fh) if r.get("train/xnli/loss")}


def result_values(job: Path) -> dict[tuple[str, str], float]:
    from xlt.results.rows import read_results

    records = read_results(job / "results.jsonl")
    return {(r["split"], r["language"]): r["value"] for r in records}


@pytest.mark.slow
def test_killed_job_resumes_from_its_checkpoint_with_the_same_numbers(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Two identical jobs (they differ only in a W&B tag, which names the folder): the first is
    killed (SIGKILL, the whole multirun) after its third checkpoint; the relaunch resumes it and
    runs the second. Same seed, same data: the resumed job must end bitwise like the other one."""
    sweep_dir = tmp_path / "sweep"
    argv = multirun(sweep_dir, cache_dir, tiny_sweep(tmp_path), "logger.tags=[a],[b]")
    proc = subprocess.Popen(
        argv, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        last = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(sweep_dir.glob("*tags=[[]a]*/checkpoints/target/last.ckpt"))
            if found:
                last = found[0]
                step = _global_step(last)
                if step is not None and step >= 18:  # 6 steps an epoch: after the third epoch's validation
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the first job did not reach its third checkpoint (or finished first)")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert last is not None
    killed_at = _global_step(last)
    run_cli(argv, tmp_path / "relaunch.log", timeout=900)
    resumed, reference = (next(sweep_dir.glob(f"*tags=[[]{tag}]*")) for tag in ("a", "b"))
    assert f"target: resuming from {last}" in (resumed / "train.log").read_text()
    assert "resuming" not in (reference / "train.log").read_text()
    assert result_values(resumed) == result_values(reference)
    after = {s: v for s, v in losses(resumed).items() if s >= killed_at}
    assert after and after == {s: v for s, v in losses(reference).items() if s >= killed_at}
    best_a, best_b = (
        torch.load(j / "checkpoints/target/best.ckpt", weights_only=True)["state_dict"]
        for j in (resumed, reference)
    )
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_b)


def _global_step(path: Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # being written, or already removed: look again
        return None


def test_a_relaunched_job_keeps_the_csv_rows_of_its_earlier_attempt(tmp_path: Path) -> None:
    """Lightning's CSVLogger deletes metrics.csv when a new process opens it: a preempted job would
    lose the rows of its first attempt. Each step is on disk as soon as it is logged."""
    import csv

    from xlt.training.loggers import ResumableCSVLogger

    first = ResumableCSVLogger(str(tmp_path))
    first.log_metrics({"train/loss": 1.5}, step=0)
    first.log_metrics({"train/loss": 1.25}, step=1)  # no save(): the attempt is killed here
    second = ResumableCSVLogger(str(tmp_path))  # the relaunch, resumed from the step-0 checkpoint
    second.log_metrics({"train/loss": 1.25}, step=1)
    second.log_metrics({"train/loss": 1.0, "dev/acc": 50.0}, step=2)  # a new column
    with open(tmp_path / "csv" / "metrics.csv", newline="") as fh:
        rows = [(r["step"], r["train/loss"], r["dev/acc"]) for r in csv.DictReader(fh)]
    assert rows == [("0", "1.5", ""), ("1", "1.25", ""), ("1", "1.25", ""), ("2", "1.0", "50.0")]


# ----------------------------------------------------------------------------- the sweep objective


@pytest.mark.parametrize(
    ("target", "expected"),
    [("xnli", 70.0), ("udpos", 91.0), ("xquad", 61.5), ("tydiqa", None), ("tatoeba", None)],
)
def test_the_sweep_objective_is_the_english_dev_selection_metric(compose_cfg, monkeypatch, target: str,
                                                                 expected: float | None) -> None:  # fmt: skip
    """What xlt.train returns to Hydra's sweeper (Optuna tunes on it): the target's English dev score
    on its selection metric, never a test score; None when the target selects on nothing."""
    import xlt.orchestration.run
    import xlt.train

    summary = {  # test scores above every dev score: a test key picked by mistake shows
        "test/xnli/avg/acc": 99.0, "test/xnli/en/acc": 98.0, "dev/xnli/en/acc": 70.0,
        "test/udpos/avg/f1": 99.0, "dev/udpos/en/acc": 95.0, "dev/udpos/en/f1": 91.0,
        "test/xquad/avg/em": 99.0, "dev/xquad/en/em": 50.0, "dev/xquad/en/f1": 73.0, "dev/xquad/en/score": 61.5,
        "test/tydiqa/avg/score": 99.0, "test/tatoeba/avg/acc": 99.0,
    }  # fmt: skip
    monkeypatch.setattr(xlt.orchestration.run, "run", lambda cfg, run_dir: summary)
    monkeypatch.setattr(xlt.train, "run_dir_from_hydra", lambda: Path("unused"))
    cfg = compose_cfg(f"+target={target}", "model=tiny")
    assert xlt.train.main.__wrapped__(cfg) == expected


def test_the_entry_point_composes_a_sweep_with_intermediate_none() -> None:
    """``intermediate=none`` is registered in code (not a YAML): ``python -m xlt.train`` must register
    it itself. In-process tests import xlt.config and so always had it; the entry point lost it once
    (a sweep then failed with "Could not find 'intermediate/none'")."""
    proc = subprocess.run(
        [sys.executable, "-m", "xlt.train", "+sweep=demo_scale_gap", "--cfg", "job"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "intermediate:\n  name: none" in proc.stdout, proc.stdout[:500]
