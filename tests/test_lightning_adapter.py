"""Lightning's private internals are used in one module only (xlt/training/lightning_adapter.py),
checked against one version; its functions work on a real Trainer of the installed Lightning."""

from __future__ import annotations

import re
from pathlib import Path

import pytorch_lightning as pl

from xlt import PROJECT_ROOT
from xlt.training import lightning_adapter as adapter

ADAPTER = PROJECT_ROOT / "xlt" / "training" / "lightning_adapter.py"
# A private attribute of a Trainer, its loops, strategy or a logger, or a private Lightning import.
PRIVATE = re.compile(
    r"\b(trainer|strategy|fit_loop|epoch_loop|logger)\._[a-z]\w*"
    r"|from (pytorch_)?lightning\S* import [^\n]*\b_[A-Za-z]"
)


def test_private_lightning_only_in_the_adapter() -> None:
    found = []
    for path in sorted((PROJECT_ROOT / "xlt").rglob("*.py")):
        if path == ADAPTER:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if PRIVATE.search(code) and "._target_" not in code:
                found.append(f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}")
    assert not found, "private Lightning internals outside the adapter:\n" + "\n".join(found)


def test_checked_version_is_the_installed_one() -> None:
    assert adapter.CHECKED_VERSION == pl.__version__ == "2.6.6"
    assert adapter.version_mismatch() is None
    line = adapter.version_mismatch("2.7.0")
    assert line is not None and "2.7.0" in line and "2.6.6" in line


def test_adapter_functions_on_a_real_trainer(tmp_path: Path) -> None:
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    adapter.set_logged_steps(trainer, 17)
    assert adapter.logged_steps(trainer) == 17
    assert adapter.state_dict_type(trainer.strategy) == "full"
    assert isinstance(adapter.signal_connector(trainer), adapter.LightningSignalConnector)
    calls = []
    adapter.set_sigterm_check(trainer, lambda: calls.append(1))
    trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor()
    assert calls == [1]
    adapter.restore_loader_states(trainer)  # nothing to restore: no error
    adapter.release_strategy(trainer)
    assert trainer.strategy.lightning_module is None and trainer.strategy.optimizers == []
