"""Nothing a run reads back can execute code: the feature cache (a group-shared folder, README) holds
JSON and Arrow only, each entry checked (size, SHA-256) and rebuilt in one line when damaged."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import pytest

from xlt.data.features import featurize, load_split_cached
from xlt.tasks import get_task
from xlt.tasks.loading import load_split


class _Payload:
    """What an attacker writes into the shared cache: unpickling it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.system, (f"touch {self.marker}",))


def _xnli_dir(data_dir: Path, root: Path) -> Path:
    src = data_dir / "xnli/en/en.genre.test.tsv"
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)[:9]
    target = root / "xnli/en/en.genre.test.tsv"
    target.parent.mkdir(parents=True)
    target.write_text("".join(lines), encoding="utf-8")
    return root


def _load(data: Path, cache: Path):
    return load_split_cached(get_task("xnli"), "test", "en", "local", data, None, cache)


def test_planted_pickle_in_the_examples_cache_does_not_run(data_dir: Path, tmp_path: Path, caplog) -> None:
    data, cache, marker = _xnli_dir(data_dir, tmp_path / "data"), tmp_path / "cache", tmp_path / "pwned"
    fresh = _load(data, cache)
    (entry,) = (cache / "examples").iterdir()
    payload = pickle.dumps(_Payload(marker))
    # The payload under the entry's own name and under the name the pickle cache used (<digest>.pkl).
    entry.write_bytes(payload)
    entry.with_suffix(".pkl").write_bytes(payload)
    with caplog.at_level(logging.WARNING, logger="xlt.data.features"):
        again = _load(data, cache)
    assert not marker.exists(), "a pickle in the cache ran"
    assert again == fresh == load_split(get_task("xnli"), "test", "en", "local", data)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and f"{entry} is damaged (not an xlt examples file); rebuilding" in warnings[0]
    import xlt.data.features as features

    assert not hasattr(features, "pickle")


@pytest.mark.parametrize(
    "damage,why",
    [
        (lambda b: b[: len(b) - 7], r"bytes, expected"),
        (lambda b: b + b"{}", r"bytes, expected"),
        (lambda b: b[:-20] + bytes([b[-20] ^ 1]) + b[-19:], r"SHA-256 does not match"),
        (lambda b: b"", r"not an xlt examples file"),
    ],
    ids=["truncated", "appended", "edited", "emptied"],
)
def test_damaged_examples_entry_is_rebuilt_in_one_line(
    data_dir: Path, tmp_path: Path, caplog, damage, why
) -> None:
    import re

    data, cache = _xnli_dir(data_dir, tmp_path / "data"), tmp_path / "cache"
    fresh = _load(data, cache)
    (entry,) = (cache / "examples").iterdir()
    good = entry.read_bytes()
    entry.write_bytes(damage(good))
    with caplog.at_level(logging.WARNING, logger="xlt.data.features"):
        assert _load(data, cache) == fresh
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and re.search(why, warnings[0]) and "\n" not in warnings[0], warnings
    assert entry.read_bytes() == good  # repaired in place


def test_damaged_feature_entry_is_rebuilt(data_dir: Path, tmp_path: Path, compose_cfg, caplog) -> None:
    from xlt.modeling.encoder import load_tokenizer

    cfg = compose_cfg("model=tiny", "+target=xnli")
    tokenizer = load_tokenizer(cfg.model, Path(cfg.data.cache_dir))
    examples = load_split(
        get_task("xnli"), "test", "en", "local", _xnli_dir(data_dir, tmp_path / "data")
    ).examples
    cache = tmp_path / "cache"

    def run() -> list[list[int]]:
        return featurize(examples, "classification", tokenizer, 64, cache, {"t": "x"})["input_ids"]

    fresh = run()
    (entry,) = (cache / "features").iterdir()
    (arrow,) = entry.glob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[:-50])
    with caplog.at_level(logging.WARNING, logger="xlt.data.features"):
        assert run() == fresh
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and f"{entry} is damaged ({arrow.name} has" in warnings[0], warnings
    assert run() == fresh and len(caplog.records) == 1  # the rebuilt entry reads without a word


# -- secrets: ${oc.env:...} never resolved into a file a run, an evaluation or an export writes ----

SECRET = "xltFAKEsecret7c1e9a"


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in sorted(root.rglob("*")) if p.is_file() and needle in p.read_bytes()]


@pytest.mark.parametrize("logger", ["wandb"])
def test_planted_secret_reaches_no_file_and_no_logger_payload(
    compose_cfg, data_dir: Path, tmp_path: Path, monkeypatch, capsys, logger: str
) -> None:
    """An environment variable a config names (here the cache directory, whose path holds a fake
    secret) is used by the run and appears in no file of the run, its evaluation and its export, nor
    in the run config the logger sends (W&B offline, read back from its files)."""

    from xlt.evaluate import evaluate
    from xlt.export import export
    from xlt.orchestration.run import run
    from xlt.orchestration.session import RunSession as Runner

    data = tmp_path / "data"
    for rel in ("xnli/en/en.genre.dev.tsv", "xnli/en/en.genre.test.tsv", "xnli/de/xglue_de_test.tsv"):
        lines = (data_dir / rel).read_text(encoding="utf-8").splitlines(keepends=True)[:25]
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text("".join(lines), encoding="utf-8")
    snli = data / "snli/esnli_tokenized"
    snli.mkdir(parents=True)
    for name in ("s1.dev", "s2.dev", "labels.dev"):
        lines = (data_dir / "snli/esnli_tokenized" / name).read_text(encoding="utf-8").splitlines(True)[:40]
        (snli / name).write_text("".join(lines), encoding="utf-8")
    # The cache directory (features, the converted tokenizer) comes from the variable; its path holds
    # the secret. Its models/ is the session cache's (the converted XLM-R vocabulary).
    cache = tmp_path / f"cache-{SECRET}"
    cache.mkdir()
    shared = Path(compose_cfg().data.cache_dir) / "models"
    shared.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(shared, target_is_directory=True)
    monkeypatch.setenv("XLT_FAKE_SECRET_DIR", str(cache))
    for key, sub in (("WANDB_DIR", "wb"), ("WANDB_CACHE_DIR", "wbc"), ("WANDB_CONFIG_DIR", "wbcfg")):
        monkeypatch.setenv(key, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    sent: dict = {}
    original_finish = Runner.finish

    def spy_finish(self: Runner) -> None:
        original_finish(self)
        if self.logger is not None and hasattr(self.logger, "experiment"):
            sent.update(dict(self.logger.experiment.config.as_dict()))

    monkeypatch.setattr(Runner, "finish", spy_finish)
    cfg = compose_cfg(
        "+target=xnli", "model=tiny", f"logger={logger}", "data.source=local",
        f"data.dir={data}", "data.cache_dir=${oc.env:XLT_FAKE_SECRET_DIR}",
        "target.train_task=snli", "target.train_split=dev",
        "target.languages=[en,de]", "target.max_train_examples=16", "target.max_eval_examples=8",
        "target.epochs=1", "target.batch_size=8", "scale.per_device_batch_size=8",
        base=("trainer.enable_progress_bar=false",),
    )  # fmt: skip
    run_dir, eval_dir, export_dir = tmp_path / "run", tmp_path / "eval", tmp_path / "export"
    summary = run(cfg, run_dir)
    assert "test/xnli/de/acc" in summary  # the run read the data through the variable
    assert sent and "params" in sent, "no W&B run config was captured"
    assert SECRET not in repr(sent)
    assert sent["data"]["cache_dir"] == "${oc.env:XLT_FAKE_SECRET_DIR}"
    evaluate(run_dir, eval_dir, ["logger.kind=wandb"])
    export(run_dir, export_dir)
    capsys.readouterr()
    leaked = [f for root in (run_dir, eval_dir, export_dir, tmp_path / "wb")
              for f in _files_holding(root, SECRET.encode())]  # fmt: skip
    assert not leaked, f"the secret was written to {leaked}"
    assert "${oc.env:XLT_FAKE_SECRET_DIR}" in (run_dir / "config.yaml").read_text()
    assert "${oc.env:XLT_FAKE_SECRET_DIR}" in (export_dir / "xlt_config.yaml").read_text()
    assert "${oc.env:XLT_FAKE_SECRET_DIR}" in (export_dir / "README.md").read_text()
    # The run directory still resumes: its config.yaml (interpolation kept) matches the relaunch.
    assert run(cfg, run_dir) == summary
    assert any((cache / "features").iterdir())  # the run used the variable's directory
