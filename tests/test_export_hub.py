"""An export's Hub side (xlt/export_hub.py): the model card's metadata as the Hub reads it, the file
modes under the user's umask, the debug-run warning, and ``--push-to-hub`` against a stand-in for
huggingface_hub's API object (never the network)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xlt import PROJECT_ROOT
from xlt.export_hub import PushError, apply_umask_tree, front_matter, hub_metadata, push_to_hub

TOY_RUN = PROJECT_ROOT / "tests/fixtures/results/toy_sweep/intermediate=mnli,model=big,seed=1,target=xnli"


def test_card_metadata_is_what_the_hub_reads(compose_cfg) -> None:
    from huggingface_hub import ModelCard

    from xlt.config import validate
    from xlt.results.rows import read_results
    from xlt.tasks.registry import get_task

    cfg = validate(compose_cfg("+intermediate=mnli", "+target=xnli", "model=xlmr_large"))
    records = read_results(TOY_RUN / "results.jsonl")
    tests = {r["language"]: r["value"] for r in records if r["stage"] == "target" and r["split"] == "test"
             and r["language"] not in ("avg", "avg_non_en", "gap", "rel_gap")}  # fmt: skip
    meta = hub_metadata(cfg, get_task("xnli", role="target"), records)
    card = ModelCard("\n".join([*front_matter(meta), "", "# card"]))
    data = card.data
    assert data.license == "mit" and data.base_model == "xlm-roberta-large"
    # The training data (MNLI, XNLI's English source, and the MNLI intermediate), not the test sets.
    assert data.datasets == ["nyu-mll/glue"] and data.library_name == "transformers"
    assert sorted(data.language) == sorted(tests)
    results = {r.dataset_config: r for r in data.eval_results}  # the Hub's own model-index parser
    assert set(results) == set(tests)
    for lang, value in tests.items():
        assert results[lang].metric_type == "acc" and results[lang].metric_value == pytest.approx(value)
        assert results[lang].task_type == "text-classification" and results[lang].dataset_split == "test"
        assert results[lang].dataset_type == "facebook/xnli"  # where the target's test sets live
    assert "debug-run" not in data.tags
    assert (
        "debug-run"
        in hub_metadata(cfg, get_task("xnli", role="target"), records, debug="fast_dev_run=True")["tags"]
    )


def test_card_names_the_training_data_and_the_qwen_research_license(compose_cfg) -> None:
    """An SNLI-trained XNLI target after the all9 mixture (CCG left out, it has no hub copy); the
    Qwen2.5-3B license is "other", so the card carries its name and link."""
    from xlt.config import validate
    from xlt.tasks.registry import get_task

    cfg = validate(compose_cfg("+intermediate=all9", "intermediate.skip_members=[ccg]", "+target=panx",
                               "target.train_task=panx", "model=qwen2_5_3b"))  # fmt: skip
    meta = hub_metadata(cfg, get_task("panx", role="target"), [
        {"stage": "target", "task": "panx", "split": "test", "language": "de", "metric": "f1", "value": 71.0}])  # fmt: skip
    assert meta["license"] == "other" and meta["license_name"] == "qwen-research"
    assert meta["license_link"] == "https://huggingface.co/Qwen/Qwen2.5-3B/blob/main/LICENSE"
    assert "google/xtreme" in meta["datasets"] and "stanfordnlp/snli" in meta["datasets"]
    assert "nyu-mll/glue" in meta["datasets"] and "rajpurkar/squad" in meta["datasets"]
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["type"] == "google/xtreme" and result["dataset"]["config"] == "PAN-X.de"


def test_exported_weights_follow_the_umask(tmp_path: Path) -> None:
    """safetensors writes 0600 whatever the umask (as export wrote model.safetensors); the tree is fixed."""
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
        (tmp_path / "sub").mkdir(mode=0o700)
        assert stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode) == 0o600
        apply_umask_tree(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "sub").stat().st_mode) == 0o755


def test_umask_only_for_what_the_export_wrote(tmp_path: Path) -> None:
    """An export into an existing folder: the user's own private file there keeps its mode 0600."""
    from safetensors.torch import save_file

    from xlt.export_hub import tree_state

    out = tmp_path / "exported"
    out.mkdir(mode=0o700)
    (out / "notes.txt").write_text("mine")
    os.chmod(out / "notes.txt", 0o600)
    os.chmod(out, 0o700)
    before = tree_state(out)
    old = os.umask(0o022)
    try:
        save_file({"w": torch.zeros(2)}, str(out / "model.safetensors"))
        changed = apply_umask_tree(out, before)
    finally:
        os.umask(old)
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((out / "notes.txt").stat().st_mode) == 0o600  # not the export's
    assert stat.S_IMODE(out.stat().st_mode) == 0o700  # the user's folder, not the export's
    assert changed == [out / "model.safetensors"]


class FakeApi:
    """Records what xlt asks of huggingface_hub.HfApi."""

    calls: list[tuple[str, dict]] = []

    def __init__(self, token: str | None = None) -> None:
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id: str, **kwargs) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs) -> None:
        self.calls.append(
            (
                "upload_folder",
                {**kwargs, "files": sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())},
            )
        )


def test_push_to_hub_with_a_token(monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    (tmp_path / "README.md").write_text("card")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert (
        push_to_hub(tmp_path, "someone/xnli-model", private=True)
        == "https://huggingface.co/someone/xnli-model"
    )
    kinds = [c[0] for c in FakeApi.calls]
    assert kinds == ["init", "create_repo", "upload_folder"]
    assert FakeApi.calls[0][1]["token"] == "hf_test_token"
    assert FakeApi.calls[1][1]["private"] is True and FakeApi.calls[1][1]["exist_ok"] is True
    assert FakeApi.calls[2][1]["repo_id"] == "someone/xnli-model" and FakeApi.calls[2][1]["files"] == [
        "README.md"
    ]


def test_push_to_hub_without_a_token_sends_nothing(monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(PushError, match="no Hugging Face token"):
        push_to_hub(tmp_path, "someone/xnli-model")
    assert FakeApi.calls == []


def _http_error() -> Exception:
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError("403 Forbidden: you have no write access to someone\n(Request ID: x)",
                          response=httpx.Response(403, request=request))  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize(
    "error, expected",
    [
        (_http_error, "HfHubHTTPError: 403 Forbidden: you have no write access to someone"),
        (lambda: __import__("huggingface_hub.errors").errors.OfflineModeIsEnabled("Cannot reach: offline mode"),
         "OfflineModeIsEnabled: Cannot reach: offline mode"),
        (lambda: ConnectionError("Connection refused\ntraceback-ish detail"), "ConnectionError: Connection refused"),
    ],
)  # fmt: skip
def test_push_errors_are_one_line(monkeypatch, tmp_path: Path, capsys, error, expected) -> None:
    """The Hub's refusal, offline mode or the network: xlt.export says so in one line and exits 2."""
    import huggingface_hub

    from xlt import export

    class Refusing(FakeApi):
        def upload_folder(self, **kwargs) -> None:
            raise error()

    monkeypatch.setattr(huggingface_hub, "HfApi", Refusing)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    with pytest.raises(PushError) as caught:
        push_to_hub(tmp_path, "someone/xnli-model")
    assert str(caught.value) == f"--push-to-hub someone/xnli-model: {expected}"
    monkeypatch.setattr(export, "export", lambda run_dir, out: out)
    assert export.main([str(tmp_path), "--out", str(tmp_path), "--push-to-hub", "someone/xnli-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"xlt.export: --push-to-hub someone/xnli-model: {expected}"


@pytest.mark.slow
def test_debug_run_export_warns_follows_umask_and_pushes(data_dir: Path, cache_dir: Path, tmp_path: Path,
                                                           monkeypatch, capsys) -> None:  # fmt: skip
    """A real debug=fdr run, exported in-process under umask 022 and pushed to the stand-in API."""
    import huggingface_hub

    from xlt.export import main

    run_dir, out = tmp_path / "run", tmp_path / "exported"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "xlt.train", "+target=xnli", "model=tiny", "debug=fdr", "logger=none",
                           "target.train_task=snli", "target.train_split=dev", f"hydra.run.dir={run_dir}",
                           f"data.cache_dir={cache_dir}"], env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    old = os.umask(0o022)
    try:
        assert main([str(run_dir), "--out", str(out), "--push-to-hub", "someone/tiny-xnli"]) == 0
    finally:
        os.umask(old)
    for name in ("model.safetensors", "xlt_head.safetensors", "README.md", "config.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    card = (out / "README.md").read_text()
    assert "Debug run (fast_dev_run=True)" in card and "debug-run" in card and "model-index" in card
    assert "pushed to https://huggingface.co/someone/tiny-xnli" in capsys.readouterr().out
    assert [c[0] for c in FakeApi.calls] == ["init", "create_repo", "upload_folder"]
