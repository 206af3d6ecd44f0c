"""The LightningModule's optimiser recipe, the head registry, and encoder carry-over between stages."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning
import torch
from omegaconf import OmegaConf
from transformers import XLMRobertaConfig, XLMRobertaModel

from xlt.modeling.heads import HEADS, build_head
from xlt.modeling.module import TransferModule, linear_warmup_decay
from xlt.modeling.pooling import pool
from xlt.orchestration.run import run
from xlt.orchestration.rundir import RunState
from xlt.tasks import get_task

from .test_pipeline import TINY_XNLI

OPTIM = OmegaConf.create(
    {"weight_decay": 0.01, "warmup_ratio": 0.1, "adam_epsilon": 1e-8, "max_grad_norm": 1.0}
)


def tiny_encoder() -> XLMRobertaModel:
    config = XLMRobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, max_position_embeddings=40)  # fmt: skip
    return XLMRobertaModel(config, add_pooling_layer=False)


def test_schedule_is_linear_warmup_then_linear_decay() -> None:
    values = [linear_warmup_decay(step, warmup=10, total=100) for step in (0, 5, 10, 55, 100, 120)]
    assert values == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0])


def test_no_weight_decay_on_biases_and_layernorm() -> None:
    xnli = get_task("xnli")
    module = TransferModule(tiny_encoder(), build_head(xnli, 16, "cls"), xnli, 1e-5, OPTIM, [], [])
    module.trainer = type("T", (), {"estimated_stepping_batches": 100})()  # type: ignore[assignment]
    conf = module.configure_optimizers()
    decay, no_decay = conf["optimizer"].param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.named_parameters()}
    assert all("bias" in names[id(p)] or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert not any("bias" in names[id(p)] or "LayerNorm" in names[id(p)] for p in decay["params"])
    assert conf["lr_scheduler"]["interval"] == "step"


def test_head_registry_covers_the_head_kinds_of_every_task() -> None:
    from xlt.tasks.registry import all_tasks

    build_head(get_task("xnli"), 8, "cls")  # loads the built-in head modules
    for spec in all_tasks().values():
        assert spec.head == "retrieval" or spec.head in HEADS, spec.name


def test_pooling() -> None:
    hidden = torch.arange(12, dtype=torch.float32).view(1, 3, 4).repeat(2, 1, 1)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    assert torch.allclose(pool(hidden, mask, "mean")[1], hidden[1, :2].mean(0))
    assert torch.equal(pool(hidden, mask, "last")[1], hidden[1, 1])


def test_encoder_carries_over_and_intermediate_head_is_dropped(compose_cfg, data_dir: Path, tmp_path: Path,
                                                               monkeypatch) -> None:  # fmt: skip
    seen = {}
    original = pytorch_lightning.Trainer.fit

    def spy(self, module, *args, **kwargs):
        seen[module.task] = {k: v.clone() for k, v in module.state_dict().items()}
        return original(self, module, *args, **kwargs)

    monkeypatch.setattr(pytorch_lightning.Trainer, "fit", spy)
    run(compose_cfg(*TINY_XNLI), tmp_path)
    best = RunState.load(tmp_path / "state.json").stage("intermediate")[
        "best"
    ]  # stored relative to the run dir
    trained = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    at_target_start = seen["xnli"]
    encoder_keys = [k for k in trained if k.startswith("encoder.")]
    assert encoder_keys
    for key in encoder_keys:  # the target starts from the intermediate-trained encoder
        assert torch.equal(at_target_start[key], trained[key]), key
    # ...with a freshly initialised head, not the intermediate one
    assert not torch.equal(
        at_target_start["heads.xnli.out_proj.weight"], trained["heads.anli_rounds.out_proj.weight"]
    )
    assert any(not torch.equal(seen["anli_rounds"][k], trained[k]) for k in encoder_keys)  # and it did train
