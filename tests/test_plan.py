"""python -m xlt.plan: parameter counts against instantiated models, memory estimates against hand
computations (XLM-R base and XXL), the GPU-memory refusal at validation, tokens and the sweep.

The estimate against a measured CPU run is in tests/test_gpu_check.py (it runs the benchmark)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from xlt.config import validate
from xlt.plan import (
    GB,
    Architecture,
    Hardware,
    count_parameters,
    estimate_memory,
    hf_config,
    plan_job,
)
from xlt.plan.cli import main, sweep_jobs
from xlt.plan.memory import stage_per_device
from xlt.plan.tokens import mean_tokens_per_example, padded_tokens_per_example, token_stats
from xlt.schema import ConfigError, group_choices

MODELS = group_choices("model")


def _counted(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_parameter_formula_matches_the_model_built_from_the_yaml(compose_cfg, name: str) -> None:
    """The formula equals the HF model (XLMRobertaModel / XLMRobertaXLModel without pooler, Qwen2Model)
    built on the meta device from the YAML's architecture."""
    from transformers import AutoModel

    cfg = compose_cfg(f"model={name}")
    config = hf_config(cfg.model)
    kwargs = {} if config.model_type == "qwen2" else {"add_pooling_layer": False}
    with torch.device("meta"):
        model = AutoModel.from_config(config, **kwargs)
    counts = count_parameters(Architecture.from_model(cfg.model))
    assert counts.total == _counted(model)
    assert counts.word_embedding == model.get_input_embeddings().weight.numel()


@pytest.mark.parametrize("name", ["qwen2_5_3b", "qwen2_5_7b"])
def test_decoder_counts_equal_those_counted_from_the_hub_configs(compose_cfg, name: str) -> None:
    """conf/model/qwen*.yaml's ``params`` were counted on Qwen2Model from the hub config.json (GQA
    key/value heads, no lm_head); the formula must give the same to the parameter."""
    cfg = compose_cfg(f"model={name}")
    assert count_parameters(Architecture.from_model(cfg.model)).total == cfg.model.params


def test_published_sizes_of_xlmr_are_reproduced(compose_cfg) -> None:
    published = {"xlmr_base": 270e6, "xlmr_large": 560e6, "xlmr_xl": 3.5e9, "xlmr_xxl": 10.7e9}
    for name, size in published.items():
        total = count_parameters(Architecture.from_model(compose_cfg(f"model={name}").model)).total
        assert abs(total / size - 1) < 0.03, (name, total)


def test_tiny_and_e5_small_match_the_loaded_encoders(compose_cfg, cache_dir) -> None:
    """The real loader: tiny is built from config with random weights, e5_small is the converted
    checkpoint (its config.json written by the conversion)."""
    from xlt.modeling.encoder import load_encoder

    for name in ("tiny", "e5_small"):
        cfg = compose_cfg(f"model={name}")
        encoder = load_encoder(cfg.model, cache_dir)
        counts = count_parameters(Architecture.from_model(cfg.model))
        assert counts.total == _counted(encoder), name
        assert counts.non_embedding == _counted(encoder) - encoder.get_input_embeddings().weight.numel()


def test_xlmr_base_ddp_estimate_by_hand(compose_cfg) -> None:
    """scale=xlmr_base: DDP on 4 GPUs (nothing sharded), 8 per device, bf16 autocast over fp32 weights,
    no checkpointing; MNLI at length 256."""
    cfg = validate(compose_cfg("model=xlmr_base", "scale=xlmr_base", "+intermediate=mnli", "+target=xnli"))
    h, f, V, L = 768, 3072, 250002, 12
    per_layer = 4 * (h * h + h) + 2 * h + (h * f + f) + (f * h + h) + 2 * h
    P = L * per_layer + V * h + 514 * h + 1 * h + 2 * h
    assert P == 277_453_056
    tokens = 8 * 256
    # bf16 (2 bytes): the layer input three times (one autocast copy per q/k/v projection), q, k, v, the
    # attention output and the out-projection input; fc1 input, GELU input, fc2 input; two LayerNorm
    # inputs in fp32; two 1-byte dropout masks.
    per_token = 2 * h * 3 + 3 * 2 * h + 2 * h + 2 * h + 2 * h + 2 * 2 * f + 2 * 4 * h + 2 * 1 * h
    embedding = tokens * h * (4 + 1) + 8 * 256 * 256
    activations = L * per_token * tokens + embedding
    est = estimate_memory(cfg)
    assert (est.weights, est.gradients, est.optimizer) == (4 * P, 4 * P, 8 * P)
    assert est.activations == activations == 838_860_800
    assert est.gathered == 0 and est.shards == 1 and not est.checkpointing
    # Fused AdamW updates in place: its temporaries (the largest tensor, the embedding, in fp32) are
    # below the activations (the foreach estimate, one fp32 copy of every parameter, was 5.55 GB).
    assert est.optimizer_step == 4 * V * h
    assert est.peak == 16 * P + max(activations, 4 * V * h) == 5_278_109_696


def test_xlmr_xxl_fsdp_estimate_by_hand(compose_cfg) -> None:
    """scale=xlmr_xxl: FSDP over 4 GPUs, 8 per device (auto), bf16 mixed precision, checkpointing per layer."""
    cfg = validate(compose_cfg("model=xlmr_xxl", "scale=xlmr_xxl", "+intermediate=mnli", "+target=xnli"))
    h, f, V, L = 4096, 16384, 250880, 48
    per_layer = 4 * (h * h + h) + 2 * h + (h * f + f) + (f * h + h) + 2 * h
    outside = V * h + 514 * h + 1 * h + 2 * h  # embeddings, type embedding, final LayerNorm (pre-LN)
    P = L * per_layer + outside
    assert P == 10_695_954_432
    tokens = 8 * 256
    full_layer = (2 * h * 3 + 3 * 2 * h + 2 * h + 2 * h + 2 * h + 2 * 2 * f + 2 * 4 * h + 2 * h) * tokens
    checkpointed = L * tokens * h * 4 + full_layer + tokens * h * 5 + 8 * 256 * 256  # fp32 layer inputs
    gathered = (
        2 * outside + 3 * per_layer
    ) * 4  # root unit, two layer units and their gradients, fp32 (policy)
    est = estimate_memory(cfg)
    assert est.shards == 4 and est.checkpointing
    assert (est.weights, est.gradients, est.optimizer) == (P * 4 / 4, P * 4 / 4, P * 8 / 4)
    assert est.activations == checkpointed == 2_022_178_816
    assert est.gathered == gathered
    assert est.optimizer_step == V * h * 4 / 4  # fused AdamW: the largest tensor's shard
    assert est.peak == 4 * P + max(checkpointed + gathered, V * h) == pytest.approx(55.46e9, rel=1e-3)
    # The same model on the one-GPU default profile: fp32 states alone are 16 bytes a parameter.
    default = estimate_memory(
        validate(
            compose_cfg(
                "model=xlmr_xxl",
                "scale=default",
                "+intermediate=mnli",
                "+target=xnli",
                "trainer.accelerator=cpu",
            )
        )
    )
    assert default.states == 16 * P and default.peak > 171e9


def test_oversized_gpu_run_is_refused_at_validation(compose_cfg, monkeypatch) -> None:
    args = ("model=xlmr_xxl", "scale=default", "+intermediate=mnli", "+target=xnli")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # accelerator=gpu needs one (xlt/checks.py)
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*args, "trainer.accelerator=gpu"))
    line = str(err.value)
    assert "\n" not in line
    for part in ("model=xlmr_xxl", "scale=default", "GB per GPU", "scale.gpu_memory_gb=80", "scale=fsdp"):
        assert part in line
    # CPU runs are not judged by a GPU estimate: accelerator=cpu, or auto without CUDA.
    validate(compose_cfg(*args, "trainer.accelerator=cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    validate(compose_cfg(*args))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="exceeds scale.gpu_memory_gb"):
        validate(compose_cfg(*args))
    # The limit is the profile's: raised, the same run passes; the model's own profile fits 80 GB.
    validate(compose_cfg(*args, "scale.gpu_memory_gb=300"))
    validate(compose_cfg("model=xlmr_xxl", "scale=xlmr_xxl", "+intermediate=mnli", "+target=xnli"))


def test_plan_cli_refuses_in_one_line(capsys) -> None:
    rc = main(["+intermediate=mnli", "+target=xnli", "model=xlmr_xxl", "scale=default"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert (
        err.startswith("model=xlmr_xxl scale=default: estimated ") and "exceeds scale.gpu_memory_gb=80" in err
    )


def test_plan_cli_single_run_prints_every_number_with_sources(capsys) -> None:
    rc = main(["+intermediate=mnli", "+target=xnli", "model=xlmr_base", "scale=xlmr_base", "--gpu", "a100"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "277,453,056 total, 85,451,520 non-embedding" in out
    assert "mnli/train 392,702 (GLUE MNLI train" in out
    # MNLI's measured lengths after length grouping at the profile's 8 a device (4 GPUs, batch 32).
    per, per_len = padded_tokens_per_example("mnli", 8, 256)
    assert 41 < per < 45  # XNLI en dev's pairs: mean 41.9 tokens; grouping pads little
    tokens = 392_702 * per * (3 + 2)
    assert f"392,702 sequences x 3 epochs x {per:,.1f} tokens after length grouping (max 256)" in out
    flops = 3 * (2 * 85_451_520 * tokens + 4 * 12 * 768 * 392_702 * per_len * 5)  # no checkpointing: 3 passes
    assert f"= {flops:.3g} FLOP (model FLOPs {flops:.3g})" in out
    hours = flops / (312e12 * 0.4) / 3600
    assert f"{hours:,.1f} GPU-hours on A100 at 40% utilisation" in out
    assert "peak 5.28 GB of 80" in out


def test_sweep_expands_like_the_basic_sweeper(compose_cfg) -> None:
    jobs = sweep_jobs(["+sweep=scale_gap"])
    assert len(jobs) == 6 * 3 * 9 * 3  # models x intermediates x the nine XTREME targets x seeds
    assert jobs[0] == ["model=xlmr_base", "intermediate=none", "target=xnli", "seed=1", "+sweep=scale_gap"]
    # The command line overrides the sweep's params by key, keeping their order.
    narrowed = sweep_jobs(["+sweep=scale_gap", "model=xlmr_xl,xlmr_xxl", "target=xnli", "seed=1"])
    assert [j[0] for j in narrowed] == ["model=xlmr_xl"] * 3 + ["model=xlmr_xxl"] * 3
    assert all("seed=1" in j for j in narrowed)


def test_plan_cli_narrowed_sweep(capsys) -> None:
    rc = main(
        ["-m", "+sweep=scale_gap", "model=xlmr_base,xlmr_xxl", "intermediate=none", "target=xnli", "seed=1"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line for line in out.splitlines() if line.startswith(("| 1:", "| 2:"))]  # markdown rows
    assert len(rows) == 2 and "| xlmr_base " in rows[0] and "| xlmr_xxl " in rows[1]
    assert "total: 2 job(s), " in out


@pytest.mark.slow  # 54 compositions: about 30 s on 2 cores (the nine-target scale_gap has 486)
def test_plan_cli_prints_every_sweep_job_and_the_total(capsys) -> None:
    rc = main(["-m", "+sweep=scale_gap_xnli"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2:].split(":")[0].isdigit()]
    assert len(rows) == 54
    # Each job composed its model's own profile (the sweep's defaults interpolation).
    for row in rows:
        model = row.split("model=")[1].split()[0]
        assert f"| {model} " in row.replace(f"model={model}", ""), row
    total = [line for line in out.splitlines() if line.startswith("total: 54 job(s), ")]
    assert total
    hours = sum(float(r.split("|")[-2].replace(",", "")) for r in rows)  # the last cell
    stated = float(total[0].split(", ")[1].split(" GPU-hours")[0].replace(",", ""))
    assert stated == pytest.approx(hours, abs=0.05 * 54)


def test_tokens_of_mixtures_and_local_counts(compose_cfg) -> None:
    cfg = validate(compose_cfg("model=xlmr_base", "+intermediate=anli", "+target=xnli"))
    job = plan_job(cfg)
    intermediate = job.tokens[0]
    assert intermediate.examples == 550_152 + 392_702 + 16_946 + 45_460 + 100_459
    # Measured lengths per member (SNLI, MNLI, ANLI): far below the old examples x 256.
    per_device, _ = stage_per_device(cfg, cfg.intermediate, "intermediate")
    by_hand = sum(n * padded_tokens_per_example(task, per_device, 256)[0]
                  for task, n in (("snli", 550_152), ("mnli", 392_702), ("anli_rounds", 162_865)))  # fmt: skip
    assert intermediate.tokens == pytest.approx(3 * by_hand)
    assert intermediate.tokens < intermediate.examples * 3 * 256 / 4
    # A split not in the published table is counted in the data directory, and the cap applies.
    demo = validate(compose_cfg("+sweep=demo_scale_gap", "intermediate=anli_rounds"))
    stages = {t.stage: t for t in plan_job(demo).tokens}
    assert stages["target"].examples == 1600 and "counted in" in stages["target"].sources[0]
    assert stages["intermediate"].examples == 800
    # Multiple choice encodes every choice.
    mc = plan_job(validate(compose_cfg("model=xlmr_base", "+intermediate=csqa", "+target=xnli")))
    assert mc.tokens[0].examples == 9_741 * 5


def test_cpu_hardware_keeps_attention_scores(compose_cfg) -> None:
    """On CPU with dropout, SDPA falls back to the math path, which keeps heads x seq^2 per sequence."""
    cfg = validate(compose_cfg("model=tiny", "+target=xnli", "target.max_seq_length=256"))
    gpu = estimate_memory(cfg, Hardware(gpu=True, precision="32-true"))
    cpu = estimate_memory(cfg, Hardware(gpu=False))
    q = torch.randn(1, 2, 8, 4, requires_grad=True)
    out = torch.nn.functional.scaled_dot_product_attention(q, q, q, dropout_p=0.1)
    assert "Flash" not in type(out.grad_fn).__name__  # the math path (a bmm/view chain), not the fused kernel
    assert cpu.activations > gpu.activations
    assert OmegaConf.select(cfg, "scale.gpu_memory_gb") == 80 and GB == 1e9


def test_retrieval_target_needs_only_the_weights(capsys) -> None:
    rc = main(["+target=tatoeba", "model=xlmr_base", "scale=xlmr_base"])
    out = capsys.readouterr().out
    assert rc == 0 and "gradients 0.00 + AdamW 0.00" in out and "total: 1 job(s), 0.0 GPU-hours" in out


def test_a_sweep_counts_a_shared_intermediate_stage_once(capsys) -> None:
    """Two targets after the same intermediate task: the sweep trains MNLI once (xlt/orchestration/reuse.py), so
    the total is the two jobs minus one MNLI stage; without reuse it is the two jobs' sum."""
    from hydra import compose, initialize_config_dir

    from xlt.plan.jobs import GPUS
    from xlt.schema import CONF_DIR

    sweep = ["model=xlmr_large", "+intermediate=mnli", "+target=xnli,pawsx"]

    def total(*extra: str) -> float:
        assert main(["-m", *sweep, *extra, "--mfu", "0.05"]) == 0
        out = capsys.readouterr().out
        line = next(line for line in out.splitlines() if line.startswith("total: 2 job(s), "))
        return float(line.split(", ")[1].split(" GPU-hours")[0].replace(",", ""))

    # The hours by hand: the two jobs' stages from plan_job (H100, 5% utilisation: hours well above rounding).
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfgs = [validate(compose("train", overrides=[*sweep[:2], f"+target={t}", "trainer.accelerator=cpu"]))
                for t in ("xnli", "pawsx")]  # fmt: skip
    jobs = [plan_job(cfg) for cfg in cfgs]
    peak = GPUS["h100"][1]
    whole = sum(job.gpu_hours(peak, 0.05) or 0.0 for job in jobs)
    mnli = jobs[1].stage_gpu_hours("intermediate", peak, 0.05)
    assert mnli > 0.3  # well above the printed total's rounding (0.1 h)
    assert total("reuse.intermediate=false") == pytest.approx(whole, abs=0.06)
    assert total() == pytest.approx(whole - mnli, abs=0.06)
    # XQuAD declares an exclusion from SQuAD dev: its job's intermediate data may differ, so it is
    # not counted as sharing one.
    assert main(["-m", "model=xlmr_base", "+intermediate=squad", "+target=xquad,mlqa"]) == 0
    assert "counted once" not in capsys.readouterr().out


def test_a_retrieval_targets_memory_follows_the_batch_it_embeds_with(compose_cfg) -> None:
    """A Tatoeba target embeds at target.eval_batch_size x target.max_seq_length: the estimate (and so
    the GPU refusal) grows with those, not with the probes' retrieval.* sizes unless probes run."""

    def activations(*overrides: str) -> float:
        return plan_job(
            validate(compose_cfg("model=xlmr_base", "+target=tatoeba", *overrides))
        ).memory.activations

    base = activations()
    assert activations("target.eval_batch_size=512") == pytest.approx(8 * base)
    assert activations("retrieval.batch_size=512") == base  # no probe: retrieval.* sizes nothing here
    assert activations("retrieval.batch_size=512", "probe.tasks=[tatoeba]") == pytest.approx(8 * base)


def test_snli_tokens_are_its_measured_lengths_not_padding_to_256(compose_cfg) -> None:
    """Issue 21 item 9: SNLI pairs average about 34 tokens; the plan counted each as 256 (7x high)."""
    cfg = validate(compose_cfg("model=xlmr_large", "+target=xnli", "target.train_task=snli"))
    target = plan_job(cfg).tokens[0]
    per_example = target.tokens / target.epochs / target.examples
    assert 33 < token_stats()["snli"].mean < 36
    assert per_example == pytest.approx(mean_tokens_per_example("snli", 256), rel=0.08)
    assert per_example < 256 / 6 and not target.upper_bound
    # A task with no measured lengths keeps the padded upper bound, and says so.
    qqp = plan_job(validate(compose_cfg("model=xlmr_large", "+intermediate=qqp", "+target=xnli"))).tokens[0]
    assert qqp.upper_bound and qqp.tokens == qqp.examples * qqp.epochs * 256


def test_length_grouping_pads_to_each_batchs_longest() -> None:
    """One row a batch pads nothing (the mean); bigger batches pad more, never past the longest."""
    alone = padded_tokens_per_example("udpos", 1, 256)[0]
    assert alone == pytest.approx(mean_tokens_per_example("udpos", 256))
    grouped = [padded_tokens_per_example("udpos", b, 256)[0] for b in (8, 32, 128)]
    assert all(alone < g < 1.05 * alone for g in grouped)  # xlt's mega-batches of 200 batches pad < 5%
    # Without grouping (each batch a random draw) a batch of 32 would pad to ~its 97th percentile.
    assert max(grouped) < 2 * token_stats()["udpos"].mean
    # Cut at a shorter max_seq_length, SQuAD's windows cost less.
    assert padded_tokens_per_example("squad", 8, 128)[0] < padded_tokens_per_example("squad", 8, 384)[0]


def test_measured_token_stats_match_the_real_files(data_dir, cache_dir) -> None:
    """The committed table is what the script measures on the real local files (SNLI dev, the first
    300 pairs here: the table's mean over 3,000 within 5%)."""
    import xlt.plan.measure_tokens as tokens

    snli = [entry for entry in tokens.MEASURED if entry[0] == "snli"]
    original = tokens.MEASURED
    try:
        tokens.MEASURED = snli
        measured = tokens.measure(data_dir, cache_dir, sample=300)["snli"]
    finally:
        tokens.MEASURED = original
    assert "snli/esnli_tokenized" in str(measured["measured_on"]) or "snli" in str(measured["measured_on"])
    assert measured["mean"] == pytest.approx(token_stats()["snli"].mean, rel=0.05)


def test_activation_recomputation_is_counted_in_the_flops(compose_cfg) -> None:
    """With activation checkpointing every layer's forward runs twice: 4 passes instead of 3."""
    on = plan_job(
        validate(compose_cfg("model=xlmr_large", "+target=xnli", "scale.activation_checkpointing=true"))
    )
    off = plan_job(
        validate(compose_cfg("model=xlmr_large", "+target=xnli", "scale.activation_checkpointing=false"))
    )
    assert on.model_flops == pytest.approx(off.model_flops)
    assert on.flops == pytest.approx(off.flops * 4 / 3)
    assert on.gpu_hours(1e15, 0.4) == pytest.approx(off.gpu_hours(1e15, 0.4) * 4 / 3)


def test_a_qwen_7b_tatoeba_job_holds_the_whole_fp32_model_and_every_layers_states(compose_cfg) -> None:
    """Issue 21 item 9: the retrieval evaluator moves the whole encoder to one device (not sharded)
    and keeps every layer's hidden states (output_hidden_states): 28 GB of fp32 weights, not 7."""
    cfg = validate(compose_cfg("model=qwen2_5_7b", "+target=tatoeba"))
    m = plan_job(cfg).memory
    params = count_parameters(Architecture.from_model(cfg.model)).total
    assert cfg.scale.devices == 4 and m.shards == 1
    assert m.weights == params * 4 and m.weights / GB > 28
    seqs, length = int(cfg.target.eval_batch_size), int(cfg.target.max_seq_length)
    assert m.activations >= (28 + 1) * seqs * length * 3584 * 4


def test_auto_per_device_batch_is_the_largest_that_fits(compose_cfg) -> None:
    """Issue 21 item 7: XXL and Qwen 7B ran 4 a device with 2 accumulation steps while the plan left
    27-45 GB free. ``auto`` (the FSDP profiles' value) resolves at validation to the largest per-device
    batch that divides the batch and fits scale.gpu_memory_gb; the resolved number is in the config."""
    from xlt.plan.jobs import AUTO_MEMORY_FRACTION
    from xlt.schema import batch_plan

    for model in ("xlmr_xxl", "qwen2_5_7b"):
        cfg = validate(compose_cfg(f"model={model}", "+intermediate=mnli", "+target=xnli"))
        assert cfg.scale.per_device_batch_size == 8  # 8 x 4 GPUs = 32: no accumulation
        assert batch_plan(32, cfg.scale.per_device_batch_size, 4) == (8, 1)
        assert plan_job(cfg).memory.peak <= AUTO_MEMORY_FRACTION * 80 * GB
    # With less memory XXL gets less, and accumulation makes up the rest; the next divisor would not fit.
    small = validate(
        compose_cfg("model=xlmr_xxl", "+intermediate=mnli", "+target=xnli", "scale.gpu_memory_gb=64")
    )
    per_device = small.scale.per_device_batch_size
    assert per_device in (1, 2, 4) and plan_job(small).memory.peak <= AUTO_MEMORY_FRACTION * 64 * GB
    bigger = validate(compose_cfg("model=xlmr_xxl", "+intermediate=mnli", "+target=xnli", "scale.gpu_memory_gb=64",
                                  f"scale.per_device_batch_size={per_device * 2}"))  # fmt: skip
    assert plan_job(bigger).memory.peak > AUTO_MEMORY_FRACTION * 64 * GB
    # A number stays a number; anything else is one line naming the option.
    assert (
        validate(
            compose_cfg("model=tiny", "+target=xnli", "scale.per_device_batch_size=4")
        ).scale.per_device_batch_size
        == 4
    )
    with pytest.raises(
        ConfigError, match=r"^scale.per_device_batch_size='big': expected a positive integer or auto$"
    ):
        validate(compose_cfg("model=tiny", "+target=xnli", "scale.per_device_batch_size=big"))


def test_plan_cli_in_a_fresh_process_knows_intermediate_none() -> None:
    """``intermediate=none`` is a Hydra option that importing xlt.config registers: the command line
    must import it before composing a sweep that lists it (this module imports it already, so
    only a fresh process shows the order)."""
    import subprocess
    import sys

    from xlt import PROJECT_ROOT

    args = ["-m", "+sweep=scale_gap", "model=xlmr_base", "intermediate=none,mnli", "target=xnli", "seed=1"]
    done = subprocess.run(
        [sys.executable, "-m", "xlt.plan", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "total: 2 job(s), " in done.stdout
