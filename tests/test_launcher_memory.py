"""The SLURM launcher asks for host memory: ``mem_gb`` is ``scale.host_memory_gb`` (per node, from
xlt.plan's estimate through the ``xlt_host_memory_gb`` resolver), not the cluster's default
(conf/hydra/launcher/slurm.yaml requested none before). Composed as a user composes it: nothing set
by hand, so the number is the plan's."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from xlt.plan.host import estimate_host
from xlt.schema import CONF_DIR
from xlt.tasks.registry import get_task


def compose_job(*overrides: str):  # type: ignore[no-untyped-def]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(
            "train", overrides=["hydra/launcher=slurm", "+target=xnli", *overrides], return_hydra_config=True
        )


def test_slurm_launcher_requests_the_plans_host_memory_for_xxl() -> None:
    cfg = compose_job("model=xlmr_xxl")
    launcher = cfg.hydra.launcher
    expected = estimate_host(cfg, gpu=True).request_gb
    assert isinstance(launcher.mem_gb, int)
    assert launcher.mem_gb == expected
    assert (
        launcher.mem_gb > 100
    )  # XXL's node (4 ranks; rank 0 loads the 42.9 GB file) is far above the default
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4


def test_slurm_launcher_requests_the_plans_host_memory_for_tiny() -> None:
    cfg = compose_job("model=tiny", "trainer.accelerator=cpu")
    launcher = cfg.hydra.launcher
    job = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    job.target.max_seq_length = get_task("xnli").max_seq_length  # what validation fills in
    assert launcher.mem_gb == estimate_host(job, gpu=False).request_gb
    assert isinstance(launcher.mem_gb, int) and launcher.mem_gb >= 1


def test_a_number_set_by_hand_still_wins() -> None:
    cfg = compose_job("model=xlmr_xxl", "scale.host_memory_gb=123")
    assert cfg.hydra.launcher.mem_gb == 123
    assert OmegaConf.select(cfg, "scale.host_memory_gb") == 123
