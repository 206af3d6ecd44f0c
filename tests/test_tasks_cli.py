"""``python -m xlt.tasks``: every task with its head and languages, and per language the file found
or the file needed, read from a data directory made here (empty files at the paths a run reads)."""

from __future__ import annotations

from pathlib import Path

from xlt.tasks.__main__ import main


def make_data(root: Path) -> Path:
    for name in ("xnli/en/en.genre.dev.tsv", "xnli/en/en.genre.test.tsv", "xnli/de/xglue_de_test.tsv"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return root


def test_summary_lists_every_task_with_its_data_here(tmp_path: Path, capsys) -> None:
    from xlt.tasks.registry import all_tasks

    assert main(["--data-dir", str(make_data(tmp_path))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"data directory: {tmp_path}"
    rows = {line.split()[0]: line.split() for line in out[3:]}  # under the header and its rule
    assert set(rows) == set(all_tasks())
    assert rows["xnli"][1:6] == ["target", "classification", "acc", "mnli", "no"]  # trains on MNLI: absent
    assert rows["xnli"][6:] == ["yes", "2/15", "(de,en)"]


def test_one_task_names_each_file_found_or_needed(tmp_path: Path, capsys) -> None:
    assert main(["--data-dir", str(make_data(tmp_path)), "xnli"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_key = {tuple(line.split()[:2]): line for line in lines[4:]}  # under the header and its rule
    assert by_key["dev", "en"].split()[2:] == ["present", "xnli/en/en.genre.dev.tsv"]
    assert by_key["test", "de"].split()[2:] == ["present", "xnli/de/xglue_de_test.tsv"]
    assert (
        by_key["test", "fr"].split()[2] == "MISSING"
        and "needs XNLI-1.0/xnli.test.tsv" in by_key["test", "fr"]
    )
    assert len([k for k in by_key if k[0] == "test"]) == 15


def test_unknown_task_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["--data-dir", str(tmp_path), "xnlii"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xlt.tasks: unknown task 'xnlii'; valid choices:")
