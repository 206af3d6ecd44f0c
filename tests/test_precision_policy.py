"""The precision policy of the FSDP profiles (xlt/training/strategies.py, docs/decoders.md "Precision"):
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

    from xlt.training.strategies import FSDP, PolicyFSDPPrecision

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

    from xlt.training.strategies import FSDP

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    strategy = FSDP(parallel_devices=[torch.device("cpu")])
    strategy.precision_plugin = FSDPPrecision("bf16-mixed")  # what the accelerator connector does
    with strategy.precision_plugin.forward_context():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.matmul(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16


class _Classifier(torch.nn.Module):
    """A random Qwen2 (tiny_qwen's shape: GQA 7:1, rope theta 1e6) with a head on the last token."""

    def __init__(self) -> None:
        from transformers import Qwen2Config, Qwen2Model

        super().__init__()
        config = Qwen2Config(vocab_size=512, hidden_size=56, num_hidden_layers=2, num_attention_heads=7,
                             num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64, use_cache=False,
                             rope_parameters={"rope_type": "default", "rope_theta": 1e6})  # fmt: skip
        self.encoder = Qwen2Model(config)
        self.head = torch.nn.Linear(56, 3)

    def forward(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=ids).last_hidden_state
        return torch.nn.functional.cross_entropy(self.head(hidden[:, -1]).float(), labels)


def _clean(name: str) -> str:
    for wrapper in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module."):
        name = name.replace(wrapper, "")
    return name


def _grad_worker(rank: int, world: int, port: int, out: str) -> None:
    import copy
    import os

    import torch.distributed as dist
    from pytorch_lightning.plugins.precision import FSDPPrecision, MixedPrecision
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.nn.parallel import DistributedDataParallel

    from xlt.modeling.families import layer_policy
    from xlt.training.strategies import FSDP

    class LightningOriginal(FSDPPrecision):  # Lightning's bf16 param/reduce/buffer dtypes, autocast on CPU
        def forward_context(self):  # type: ignore[no-untyped-def]
            return torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    base = _Classifier()
    g = torch.Generator().manual_seed(1)
    ids, labels = (
        torch.randint(0, 512, (4 * world, 48), generator=g),
        torch.randint(0, 3, (4 * world,), generator=g),
    )
    mine = slice(rank * 4, (rank + 1) * 4)

    ddp = DistributedDataParallel(copy.deepcopy(base))
    with MixedPrecision("bf16-mixed", "cpu").forward_context():
        ddp(ids[mine], labels[mine]).backward()
    result: dict[str, object] = {"ddp": {n: p.grad.clone() for n, p in ddp.module.named_parameters()}}

    for name, plugin in (
        ("policy", FSDPPrecision("bf16-mixed")),
        ("lightning", LightningOriginal("bf16-mixed")),
    ):
        strategy = FSDP(
            auto_wrap_policy=layer_policy("qwen2"),
            activation_checkpointing_policy=layer_policy("qwen2"),
            sync_module_states=True,
            parallel_devices=[torch.device("cpu")] * world,
        )
        strategy.precision_plugin = plugin  # the connector's hand-over: the setter installs the policy
        wrapped = strategy._setup_model(copy.deepcopy(base))
        assert isinstance(wrapped, FullyShardedDataParallel)
        with strategy.precision_plugin.forward_context():
            wrapped(ids[mine], labels[mine]).backward()
        with FullyShardedDataParallel.summon_full_params(wrapped, with_grads=True):
            result[name] = {_clean(n): p.grad.clone() for n, p in wrapped.named_parameters()}
        mp = wrapped.mixed_precision
        result[f"{name}_dtypes"] = (mp.param_dtype, mp.reduce_dtype, mp.buffer_dtype)
        result[f"{name}_inv_freq"] = {b.dtype for n, b in wrapped.named_buffers() if n.endswith("inv_freq")}
    if rank == 0:
        torch.save(result, out)
    dist.barrier()
    dist.destroy_process_group()


# Relative L2 error of each full gradient (FSDP's against DDP's, same weights, same batch, one backward).
# Measured (2026-12-07, shared 2-core CPU): the policy's largest 0.0 (bitwise: the same fp32 weights
# under the same autocast, fp32 reduction); Lightning's bf16 param/reduce/buffer config: largest 0.018.
# ~110 s wall on the loaded 2-core machine (23 s CPU): slow.
GRAD_TOL = 1e-5


@pytest.mark.slow
def test_fsdp_gradients_equal_ddps_under_the_policy_and_not_under_lightnings(tmp_path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "grads.pt"
    mp.spawn(_grad_worker, args=(2, port, str(out)), nprocs=2, join=True)
    result = torch.load(out, weights_only=False)
    assert result["policy_dtypes"] == (torch.float32, torch.float32, torch.float32)
    assert result["policy_inv_freq"] == {torch.float32}
    assert result["lightning_inv_freq"] == {torch.bfloat16}
    ddp = result["ddp"]

    def errors(grads: dict) -> dict[str, float]:
        assert set(grads) == set(ddp)
        return {n: float((grads[n] - ddp[n]).norm() / ddp[n].norm().clamp_min(1e-12)) for n in ddp}

    policy, lightning = errors(result["policy"]), errors(result["lightning"])
    print("policy max", max(policy.values()), "lightning max", max(lightning.values()))  # noqa: T201
    assert max(policy.values()) <= GRAD_TOL, sorted(policy.items(), key=lambda kv: -kv[1])[:3]
    assert max(lightning.values()) > 100 * GRAD_TOL  # Lightning's original config fails it


def test_result_rows_name_one_policy_for_ddp_and_fsdp() -> None:
    from xlt.training.strategies import precision_policy

    fsdp = {"_target_": "xlt.training.strategies.FSDP"}
    assert precision_policy("bf16-mixed", "ddp") == precision_policy("bf16-mixed", fsdp)
    assert (
        precision_policy("bf16-mixed", fsdp)
        == "bf16-mixed:compute=bf16-autocast,params=fp32,reduce=fp32,buffers=fp32"
    )
    assert precision_policy("32-true", "auto") == "32-true:fp32"
    assert precision_policy("bf16-true", fsdp) != precision_policy("bf16-true", "ddp")
