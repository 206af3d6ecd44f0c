"""The analysis notebook runs as opened (its default is the toy-sweep fixture) and is stored with the
outputs that running it gives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xlt import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "gap_vs_size.ipynb"


def text_outputs(nb) -> list[list[str]]:
    """Per code cell, its text outputs (stream text, markdown, plain text; not image bytes)."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        texts = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                texts.append(out.text)
            elif "data" in out:
                data = out.data
                if "image/png" in data:
                    texts.append("<image>")
                else:
                    texts.append(data.get("text/markdown") or data.get("text/plain", ""))
            elif out.output_type == "error":
                texts.append(f"ERROR {out.ename}: {out.evalue}")
        cells.append(texts)
    return cells


def test_notebook_runs_on_the_fixture_and_its_stored_outputs_are_current(monkeypatch, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    stored = nbformat.read(NOTEBOOK, as_version=4)
    for var in ("XLT_SWEEP_DIR", "XLT_WANDB_PATH", "XLT_WANDB_GROUP", "XLT_ANALYSIS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]))
    fresh = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(fresh, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()  # fmt: skip
    outputs = text_outputs(fresh)
    assert not any(t.startswith("ERROR") for cell in outputs for t in cell)
    joined = "\n".join(t for cell in outputs for t in cell)
    # The fixture's gap for the small model without an intermediate task (make_fixture.py's scores).
    assert "16.00 [3.29, 28.71]" in joined and "<image>" in joined
    # Stored with outputs, and they are what running it gives now.
    assert all(text_outputs(stored)[1:]), "an analysis cell is stored without outputs"
    assert text_outputs(stored) == outputs
    # The fixture folder got no analysis/ written into it.
    assert not (PROJECT_ROOT / "tests" / "fixtures" / "results" / "toy_sweep" / "analysis").exists()
