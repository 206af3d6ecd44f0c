"""A tiny checkpointing Hydra app for the Slurm harness tests (independent of the xlt package).

It "trains" for ``steps`` steps, writing ``state.json`` (step, total) atomically to its Hydra
run dir after every step, and resumes from it when started again in the same run dir - which is
what a submitit requeue does (the launcher resubmits the same job, same overrides, same run
dir). Each start appends one line to ``attempts.jsonl``; the end writes ``result.json``.

    python tests/slurm_app/app.py -m x=1,2 hydra/launcher=submitit_slurm \
        hydra.launcher.partition=debug
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)  # atomic: a preemption never leaves half a checkpoint


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> int:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    ckpt = run_dir / "state.json"
    state = json.loads(ckpt.read_text()) if ckpt.exists() else {"step": 0, "total": 0}
    with open(run_dir / "attempts.jsonl", "a") as f:
        attempt = {
            "resumed_from_step": state["step"],
            "job_id": os.environ.get("SLURM_JOB_ID"),
            "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
            "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
            "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "hydra_job_id": HydraConfig.get().job.id,
        }
        f.write(json.dumps(attempt) + "\n")
    while state["step"] < cfg.steps:
        time.sleep(cfg.step_s)
        state = {"step": state["step"] + 1, "total": state["total"] + cfg.x * (state["step"] + 1)}
        _write_json(ckpt, state)
    _write_json(run_dir / "result.json", {"x": cfg.x, "steps": cfg.steps, "total": state["total"]})
    return state["total"]


if __name__ == "__main__":
    main()
