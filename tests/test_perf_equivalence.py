"""The speed changes of issue 15 keep the results: the fused AdamW that ``configure_optimizers`` now
builds updates parameters as torch's reference (per-parameter loop) AdamW does, and the
length-grouped training loader feeds every example exactly once per epoch while padding little."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

from xlt.data.datamodule import DataSettings, StageDataModule, prepare_stage_data
from xlt.e5 import ensure_e5_small
from xlt.modeling.heads import build_head
from xlt.modeling.module import TransferModule, adamw_implementation
from xlt.tasks import get_task

from .test_modeling import OPTIM


def small_module() -> TransferModule:
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=40)  # fmt: skip
    encoder = XLMRobertaModel(config, add_pooling_layer=False)
    xnli = get_task("xnli")
    module = TransferModule(encoder, build_head(xnli, 32, "cls"), xnli, 1e-3, OPTIM, [], [])
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()  # type: ignore[assignment]
    return module


def test_configure_optimizers_picks_fused_adamw_with_the_same_param_groups() -> None:
    module = small_module()
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is True  # on CPU torch would otherwise loop per parameter
    decay, no_decay = optimizer.param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {
        id(p) for p in module.parameters()
    }
    # Not fused where torch has no fused kernel for the parameters (integers; nothing to choose).
    assert adamw_implementation([torch.zeros(2, dtype=torch.int64)]) == {}
    assert adamw_implementation([]) == {}


def test_fused_adamw_gives_the_reference_parameters_after_several_steps() -> None:
    fused_module = small_module()
    reference_module = copy.deepcopy(fused_module)
    reference_module.trainer = fused_module.trainer
    fused_conf = fused_module.configure_optimizers()
    reference_conf = reference_module.configure_optimizers()
    # The reference: the same groups and hyperparameters through torch's per-parameter loop.
    reference = reference_conf["optimizer"]
    for group in reference.param_groups:
        group["fused"], group["foreach"] = False, False
    reference.defaults["fused"] = False
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        ids = torch.randint(3, 120, (4, 12), generator=gen)
        labels = torch.randint(0, 3, (4,), generator=gen)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
        for module, conf in ((fused_module, fused_conf), (reference_module, reference_conf)):
            torch.manual_seed(2)  # the same dropout masks
            loss = module.head.loss(module(dict(batch)), batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), OPTIM.max_grad_norm)
            conf["optimizer"].step()
            conf["lr_scheduler"]["scheduler"].step()
            conf["optimizer"].zero_grad(set_to_none=True)
    moved = 0
    initial = small_module()
    for (name, a), b, c in zip(fused_module.named_parameters(), reference_module.parameters(),
                               initial.parameters(), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        moved += int(not torch.equal(a, c))
    assert moved == len(list(initial.parameters()))  # every weight was trained


@pytest.fixture(scope="module")
def settings(cache_dir: Path, data_dir: Path) -> DataSettings:
    tokenizer = AutoTokenizer.from_pretrained(ensure_e5_small(cache_dir / "models" / "multilingual-e5-small"))
    return DataSettings("local", data_dir, cache_dir, tokenizer)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "train_task", "split"), [("udpos", "udpos", "train"), ("xnli", "snli", "dev")]
)
def test_training_loader_feeds_each_example_once_per_epoch_with_little_padding(
    settings: DataSettings, task: str, train_task: str, split: str
) -> None:
    """Real UD-POS English train (17,500 sentences) and SNLI dev, batch 32 as the targets train:
    the loader Lightning iterates yields every feature exactly once per epoch, a different order
    each epoch, and >= 95% of its tokens are real (the README's padding-efficiency claim)."""
    spec = get_task(task)
    data = prepare_stage_data(task=spec, train_task=get_task(train_task), train_split=split, dev_split=None,
                              test_split=None, languages=[], settings=settings, max_len=256, max_train=None,
                              max_eval=None)  # fmt: skip
    assert data.train is not None
    expected = sorted(data.train["example_idx"])  # a long sentence's windows share its example index
    dm = StageDataModule(data, settings.tokenizer, 32, 64, seed=42)
    loader = dm.train_dataloader()
    orders = []
    for epoch in range(3):
        loader.batch_sampler.set_epoch(epoch)  # what Lightning's set_epoch reaches
        seen: list[int] = []
        real = padded = 0
        for batch in loader:
            seen.extend(batch["example_idx"].tolist())
            real += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()
        assert sorted(seen) == expected, f"epoch {epoch}: not every feature exactly once"
        assert real / padded >= 0.95, f"epoch {epoch}: padding efficiency {real / padded:.3f}"
        orders.append(seen)
    assert orders[0] != orders[1] != orders[2]


def test_parsed_examples_are_cached_and_follow_their_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeated run reads a split's examples from the cache instead of parsing the files again;
    changing a file (size or mtime) parses it anew, and the cached examples equal the parsed ones."""
    import os

    import xlt.data.features as features
    import xlt.tasks.loading as loading
    from xlt.data.features import load_split_cached

    data = tmp_path / "data" / "ud_pos" / "UD_Toy"
    data.mkdir(parents=True)
    conllu = data / "de_toy-ud-test.conllu"
    conllu.write_text("1\tDas\tder\tDET\t_\t_\t2\tdet\t_\t_\n2\tHaus\tHaus\tNOUN\t_\t_\t0\troot\t_\t_\n\n")
    parses = []
    real = loading.load_split
    # Counted where load_split_cached calls it (xlt.data.features imports it at module level).
    monkeypatch.setattr(features, "load_split", lambda *a, **k: parses.append(a) or real(*a, **k))
    spec, cache = get_task("udpos"), tmp_path / "cache"

    def load() -> loading.Loaded:
        return load_split_cached(spec, "test", "de", "local", tmp_path / "data", None, cache)

    first = load()
    assert first == load() == real(spec, "test", "de", "local", tmp_path / "data")
    assert len(parses) == 1
    conllu.write_text(conllu.read_text() + "1\tJa\tja\tINTJ\t_\t_\t0\troot\t_\t_\n\n")
    os.utime(conllu, ns=(1, 1))
    assert [ex["words"] for ex in load().examples] == [["Das", "Haus"], ["Ja"]]
    assert len(parses) == 2
    # No cache directory, or a missing file: load_split as before (its one-line error included).
    assert load_split_cached(spec, "test", "de", "local", tmp_path / "data", None, None) == load()
    with pytest.raises(loading.MissingDataError):
        load_split_cached(spec, "test", "fr", "local", tmp_path / "data", None, cache)


class _Linear(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch.float().view(-1, 1)).pow(2).mean()
        self.log("train/toy/loss", loss)  # as TransferModule logs it: not prog_bar
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_resume_point_is_not_written_after_the_last_step_and_the_bar_reads_the_loss(tmp_path: Path) -> None:
    """last.ckpt is written after every epoch but the last (the stage deletes it then); the training
    loss is not a prog_bar metric (read back every step) yet the progress bar shows it."""
    from torch.utils.data import DataLoader

    from xlt.training.callbacks import LossProgressBar, ResumePoint

    written: list[int] = []

    class Recording(ResumePoint):
        def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
            written.append(trainer.global_step)
            super()._save_checkpoint(trainer, filepath)

    bar = LossProgressBar(refresh_rate=5)
    trainer = pl.Trainer(max_epochs=3, callbacks=[Recording(dirpath=tmp_path, filename="last", save_top_k=1,
                         enable_version_counter=False), bar], logger=False, enable_model_summary=False,
                         default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(_Linear(), train_dataloaders=DataLoader(list(range(10)), batch_size=2))
    assert written == [5, 10]  # not 15: training was over
    assert "train/toy/loss" not in trainer.progress_bar_metrics
    assert float(bar.get_metrics(trainer, trainer.lightning_module)["train/toy/loss"]) >= 0


def test_a_tiny_run_builds_the_xlmr_tokenizer_once(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Start-up: the tiny model's random encoder takes its vocabulary from the tokenizer the run has
    already loaded instead of building XLM-R's 250k-piece tokenizer a second time."""
    from omegaconf import OmegaConf

    import xlt.modeling.encoder as encoder_module

    ensure_e5_small(cache_dir / "models" / "multilingual-e5-small")
    built = []
    real = AutoTokenizer.from_pretrained
    monkeypatch.setattr(
        encoder_module.AutoTokenizer, "from_pretrained", lambda *a, **k: built.append(a) or real(*a, **k)
    )
    encoder_module._e5_tokenizer.cache_clear()
    cfg = OmegaConf.create({"name": "tiny", "source": "random", "dtype": "float32", "hidden_size": 32, "num_layers": 1,
                           "freeze_embeddings": False, "random_init": {"num_attention_heads": 2, "intermediate_size": 64}})  # fmt: skip
    tokenizer = encoder_module.load_tokenizer(cfg, cache_dir)
    encoder = encoder_module.load_encoder(cfg, cache_dir)
    assert encoder.config.vocab_size == len(tokenizer) and len(built) == 1


def test_clipping_reuses_the_guards_norm_and_clips_as_lightning_does() -> None:
    """DivergenceGuard takes the gradients' total norm before clipping; the module's clipping then
    scales by that norm instead of computing it again. The clipped gradients equal those of torch's
    clip_grad_norm_ (what Lightning calls) bit for bit, and the norm is taken once per step."""
    from pytorch_lightning.plugins.precision import Precision

    from xlt.training.callbacks import DivergenceGuard

    module = small_module()
    reference = copy.deepcopy(module)
    optimizer = module.configure_optimizers()["optimizer"]
    stub = type("T", (), {"precision_plugin": Precision(), "world_size": 1,
                          "strategy": type("S", (), {"model": module})()})()  # fmt: skip
    module.trainer = stub  # type: ignore[assignment]
    ids = torch.randint(3, 120, (4, 12), generator=torch.Generator().manual_seed(3))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 2, 0])}
    for m in (module, reference):
        torch.manual_seed(2)
        (m.head.loss(m(dict(batch)), batch) * 100).backward()  # a norm far above the clip value
    calls = []
    real_norm = torch.nn.utils.get_total_norm
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.utils, "get_total_norm", lambda *a, **k: calls.append(1) or real_norm(*a, **k))
        DivergenceGuard("target").on_before_optimizer_step(stub, module, optimizer)  # type: ignore[arg-type]
        module.configure_gradient_clipping(optimizer, 0.5, "norm")
    assert len(calls) == 1 and module.unclipped_grad_norm is None
    norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
    assert norm > 0.5
    for (name, a), b in zip(module.named_parameters(), reference.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None
        assert torch.equal(a.grad, b.grad), name


def test_fp16_with_a_grad_scaler_keeps_an_optimizer_lightning_can_clip() -> None:
    """Under 16-mixed (a GradScaler) the module takes torch's default AdamW, not the fused one:
    Lightning refuses norm clipping for an optimizer that unscales its own gradients, and every run
    clips (optim.max_grad_norm)."""
    from pytorch_lightning.plugins.precision import MixedPrecision
    from pytorch_lightning.utilities.enums import GradClipAlgorithmType

    module = small_module()
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    module.trainer = type("T", (), {"estimated_stepping_batches": 10, "precision_plugin": plugin})()  # type: ignore[assignment]
    optimizer = module.configure_optimizers()["optimizer"]
    assert not optimizer.defaults["fused"]
    ids = torch.randint(3, 120, (4, 12), generator=torch.Generator().manual_seed(3))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 2, 0])}
    module.head.loss(module(dict(batch)), batch).backward()
    plugin.clip_gradients(optimizer, 1.0, GradClipAlgorithmType.NORM)  # raised with the fused optimizer
    # Without a scaler (fp32, bf16-mixed) the fused one stays, and the module clips it itself (Lightning's
    # MixedPrecision.clip_gradients refuses a fused optimizer), also without the guard's norm: as torch's
    # clip_grad_norm_ to the bit.
    module, reference = small_module(), small_module()
    bf16 = MixedPrecision("bf16-mixed", "cpu")
    module.trainer = type("T", (), {"estimated_stepping_batches": 10, "precision_plugin": bf16,  # type: ignore[assignment]
                                    "strategy": type("S", (), {"model": module})()})()  # fmt: skip
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is True
    with pytest.raises(Exception, match="clipping"):
        bf16.clip_gradients(optimizer, 1.0, GradClipAlgorithmType.NORM)
    for m in (module, reference):
        torch.manual_seed(2)
        (m.head.loss(m(dict(batch)), batch) * 100).backward()
    assert module.unclipped_grad_norm is None
    module.configure_gradient_clipping(optimizer, 0.5, "norm")
    assert torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5) > 0.5
    for (name, a), b in zip(module.named_parameters(), reference.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None and torch.equal(a.grad, b.grad), name
