"""The precision policy of the FSDP profiles (xlt/strategies.py, docs/decoders.md "Precision"):
one policy whatever the precision string, the wrap and the device."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed", "32-true"])
def test_every_precision_builds_a_trainer_under_the_fsdp_profile(precision: str) -> None:
    """`16-mixed` under an FSDP profile used to crash in the Trainer's constructor: the connector hands
    a ShardedGradScaler, and Lightning's FSDPPrecision.__init__ refused it (it read self.precision
    before setting it)."""
    import pytorch_lightning as pl
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    from xlt.strategies import FSDP, PolicyFSDPPrecision

    trainer = pl.Trainer(
        strategy=FSDP(),
        precision=precision,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
    )
    plugin = trainer.strategy.precision_plugin
    assert type(plugin) is PolicyFSDPPrecision and plugin.precision == precision
    assert isinstance(plugin.scaler, ShardedGradScaler) == (precision == "16-mixed")
    assert trainer.strategy.mixed_precision_config.reduce_dtype == torch.float32
    with pytest.raises(ValueError, match="does not use a scaler"):
        PolicyFSDPPrecision("bf16-mixed", ShardedGradScaler())


def test_autocast_runs_on_the_strategys_device_not_where_cuda_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU run on a node with GPUs autocasts on CPU (the old plugin chose "cuda" whenever CUDA was
    available, so the CPU ops ran in fp32 and the CUDA autocast state was set for nothing)."""
    from pytorch_lightning.plugins.precision import FSDPPrecision

    from xlt.strategies import FSDP

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    strategy = FSDP(parallel_devices=[torch.device("cpu")])
    strategy.precision_plugin = FSDPPrecision("bf16-mixed")  # what the accelerator connector does
    with strategy.precision_plugin.forward_context():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.matmul(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
