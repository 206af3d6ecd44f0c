"""The SLURM launcher asks for host memory: ``mem_gb`` is ``scale.host_memory_gb`` (per node, from
xlt.plan), not the cluster's default (conf/hydra/launcher/slurm.yaml requested none before)."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from xlt.config import CONF_DIR


def launcher(*overrides: str):  # type: ignore[no-untyped-def]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=["hydra/launcher=slurm", "+target=xnli", *overrides], return_hydra_config=True
        )
    return cfg.hydra.launcher


def test_slurm_launcher_requests_the_jobs_host_memory() -> None:
    got = launcher("model=xlmr_xxl", "++scale.host_memory_gb=123")
    assert got.mem_gb == 123
    assert got.tasks_per_node == got.gpus_per_node == 4
