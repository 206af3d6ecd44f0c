"""Review follow-ups of the hub data work (issue 22): pins checked, realignment direction, config
keys checked, error hints copy-pasteable, errors in row processing named in one line."""

from __future__ import annotations

import datasets
import pytest

from xlt.tasks import hub as hubio
from xlt.tasks.loading import load_split
from xlt.tasks.registry import get_task
from xlt.tasks.spec import DataError


@pytest.fixture(autouse=True)
def _fresh_hub_settings():
    hubio.configure()
    yield
    hubio.configure()


def test_realign_prefers_the_occurrence_at_or_before_the_original_start() -> None:
    # Stripping moves text towards the front: "ab" at 3 was not there; the one at 0 is before it.
    assert hubio.realign_answer("ab x ab", "ab", 3) == 0
    assert hubio.realign_answer("  ab ab", "ab", 1) == 2  # none at or before 1 -> the nearest after
    assert hubio.realign_answer("ab ab", "ab", 3) == 3  # at the offset: kept
    assert hubio.realign_answer("ab", "cd", 0) is None


def test_an_error_while_reading_hub_rows_is_one_line_naming_the_dataset(monkeypatch) -> None:
    """A row not shaped as the mapper expects (a missing column) and a failure while iterating the
    rows both stop in one DataError line naming repo, config and split."""

    def missing_column(path, name=None, split=None, revision=None):
        return datasets.Dataset.from_dict({"premise": ["p"], "label": [0]})  # no hypothesis

    monkeypatch.setattr(datasets, "load_dataset", missing_column)
    with pytest.raises(DataError) as err:
        load_split(get_task("xnli"), "test", "de", "hub", None)
    assert "\n" not in str(err.value) and "hub:facebook/xnli/de[test] row 0" in str(err.value)

    class Broken:
        _fingerprint = "x"

        def __iter__(self):
            raise OSError("corrupt\nparquet page")

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: Broken())
    with pytest.raises(DataError) as err:
        load_split(get_task("xnli"), "test", "de", "hub", None)
    assert str(err.value) == (
        "hub:facebook/xnli/de[test]: could not read its rows (OSError: corrupt parquet page)"
    )


def test_error_hints_are_quoted_for_the_shell() -> None:
    from xlt.tasks.loading import member_missing

    line = member_missing("all9", "ccg", RuntimeError("no file"))
    assert line.endswith("'intermediate.skip_members=[ccg]'")


def test_the_mirror_variable_is_read_by_the_config_only(monkeypatch, tmp_path, compose_cfg) -> None:
    """``data.hub_mirror=null`` wins over an exported $XLT_HUB_MIRROR (the config interpolates it,
    hub.py does not read it again), so relaunch pinning stays on; a mirror read is marked."""
    monkeypatch.setenv(hubio.HUB_MIRROR_ENV, str(tmp_path))
    cfg = compose_cfg("+target=xnli", "data.hub_mirror=null")
    assert cfg.data.hub_mirror is None
    hubio.configure(cfg.data.hub_mirror)
    assert hubio.mirror_dir("google/xtreme", None) is None
    reads = {"a": {"repo": "google/xtreme", "commit": "1" * 40, "mirror": ""}}
    assert hubio.pins(reads, cfg.data.hub_mirror) == {"google/xtreme": "1" * 40}
    (tmp_path / "COMMIT").write_text("2" * 40 + "\n")
    assert hubio.resolved_commit(None, tmp_path) == "mirror:" + "2" * 40
    assert hubio.pins({"a": {"repo": "google/xtreme", "commit": "mirror:" + "2" * 40, "mirror": ""}}) == {}


def _hub_cache(root, repo: str, config: str, split: str, commit: str, rows: dict) -> None:
    """A ``datasets`` 5.2.0 hub cache entry as the library lays it out and reads it back offline:
    ``<cache>/<owner>___<name>/<config>/0.0.0/<commit>/`` holding ``dataset_info.json`` and
    ``<name>-<split>.arrow`` (datasets/builder.py ``_relative_data_dir``, naming.py, and the Cache
    builder that ``CachedDatasetModuleFactory`` falls back to)."""
    from datasets.naming import filenames_for_dataset_split

    owner, name = repo.split("/")
    directory = root / f"{owner}___{name}" / config / "0.0.0" / commit
    directory.mkdir(parents=True)
    (arrow,) = filenames_for_dataset_split(str(directory), name, split, filetype_suffix="arrow")
    ds = datasets.Dataset.from_dict(rows).map(lambda row: row, cache_file_name=arrow)
    info = datasets.DatasetInfo(features=ds.features, config_name=config, dataset_name=name, version="0.0.0")
    info.splits = datasets.SplitDict(
        {split: datasets.SplitInfo(split, num_examples=len(ds), dataset_name=name)}
    )
    info.write_to_directory(str(directory))


def test_a_commit_pin_that_datasets_drops_offline_is_refused(tmp_path, monkeypatch) -> None:
    """The production call (repo, config, split, revision) offline: datasets 5.2.0 falls back to the
    newest cached copy and drops the revision. The commit read comes from the real cache layout
    (``resolved_commit``); a pin it does not match stops the read in one line."""
    import datasets.config

    cached, other = "b" * 40, "a" * 40
    _hub_cache(tmp_path, "facebook/xnli", "de", "test", cached,
               {"premise": [" p"], "hypothesis": ["h "], "label": [2]})  # fmt: skip
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    hubio.configure(revisions={"facebook/xnli": cached})
    loaded = load_split(get_task("xnli"), "test", "de", "hub", None)
    assert loaded.examples == [{"text_a": "p", "text_b": "h", "label": 2}]
    (read,) = hubio.hub_reads().values()
    assert read["commit"] == cached and read["revision"] == cached
    hubio.configure(revisions={"facebook/xnli": other})
    with pytest.raises(DataError) as err:
        load_split(get_task("xnli"), "test", "de", "hub", None)
    assert "\n" not in str(err.value)
    assert f"hub:facebook/xnli@{other}/de[test]: pinned to commit {other} but read {cached}" in str(err.value)


def test_a_commit_pin_on_a_mirror_holding_another_commit_is_refused(tmp_path) -> None:
    from tests import hub_fixtures

    xnli = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                              "label": hub_fixtures.NLI})  # fmt: skip
    m = hub_fixtures.Mirror(tmp_path, tmp_path / "local", tmp_path)
    m.add("facebook/xnli", "de", "test", [{"premise": "p", "hypothesis": "h", "label": 0}], xnli)
    m.write()
    held = hub_fixtures.fake_commit("facebook/xnli")
    hubio.configure(mirror=tmp_path, revisions={"facebook/xnli": held})
    assert len(load_split(get_task("xnli"), "test", "de", "hub", None).examples) == 1
    hubio.configure(mirror=tmp_path, revisions={"facebook/xnli": "c" * 40})
    with pytest.raises(DataError, match=f"pinned to commit {'c' * 40} but read {held}"):
        load_split(get_task("xnli"), "test", "de", "hub", None)


def test_a_misspelt_hub_revisions_repo_is_refused(compose_cfg) -> None:
    from xlt.config import validate
    from xlt.schema import ConfigError

    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("+target=xnli", "data.hub_revisions={google/xtrme: main}"))
    message = str(err.value)
    assert "\n" not in message and message.startswith("data.hub_revisions: 'google/xtrme' is not a hub repo")
    assert "google/xtreme" in message and "allenai/cosmos_qa" in message
    validate(compose_cfg("+target=xnli", "data.hub_revisions={google/xtreme: main}"))


def test_a_run_stored_before_new_keys_existed_can_be_relaunched(compose_cfg, tmp_path) -> None:
    """A config.yaml written before this round lacks data.hub_mirror, data.hub_revisions,
    intermediate.skip_members and model.revision: absent keys stand for their defaults (the schema's,
    or the config group file's: the model's pinned revision), so the relaunch is accepted; a key
    absent before and set to something else now still differs."""
    from omegaconf import OmegaConf

    from xlt.config import validate
    from xlt.orchestration.config_lock import check_same_config, config_differences
    from xlt.orchestration.plan_sections import ConfigRecord
    from xlt.schema import ConfigError, to_container

    args = ("model=xlmr_large", "+intermediate=all9", "+target=xnli")
    cfg = validate(compose_cfg(*args))
    stored = to_container(cfg)
    for section, key in (("data", "hub_mirror"), ("data", "hub_revisions"), ("intermediate", "skip_members"),
                         ("model", "revision")):  # fmt: skip
        del stored[section][key]
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(stored))
    check_same_config(ConfigRecord.of(cfg), tmp_path / "config.yaml")
    changed = ConfigRecord.of(
        validate(compose_cfg(*args, "intermediate.skip_members=[ccg]", "model.revision=main"))
    )
    assert config_differences(changed, stored) == ["intermediate.skip_members", "model.revision"]
    with pytest.raises(ConfigError, match="belongs to another configuration"):
        check_same_config(changed, tmp_path / "config.yaml")


def test_snli_rows_without_consensus_are_dropped_from_hub_shaped_rows(tmp_path) -> None:
    """stanfordnlp/snli as the hub serves it: untokenized snli_1.0 text, label -1 where the
    annotators had no consensus; -1 rows are dropped and counted, the others kept as served."""
    from tests import hub_fixtures

    snli = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                              "label": hub_fixtures.NLI})  # fmt: skip
    m = hub_fixtures.Mirror(tmp_path, tmp_path / "local", tmp_path)
    m.add("stanfordnlp/snli", None, "test", [
        {"premise": "A man, in a hat, sings.", "hypothesis": "A man sings.", "label": 0},
        {"premise": "Two dogs run.", "hypothesis": "Animals sleep.", "label": -1},
        {"premise": "A girl reads. ", "hypothesis": "A girl is outside.", "label": 1},
    ], snli)  # fmt: skip
    m.write()
    hubio.configure(mirror=tmp_path)
    loaded = load_split(get_task("snli"), "test", "en", "hub", None)
    assert loaded.dropped == 1
    assert loaded.examples == [
        {"text_a": "A man, in a hat, sings.", "text_b": "A man sings.", "label": 0},
        {"text_a": "A girl reads.", "text_b": "A girl is outside.", "label": 1},
    ]
    (read,) = hubio.hub_reads().values()
    assert read["dropped"] == 1 and read["rows"] == 2


def test_the_audit_entry_point_reads_the_configured_mirror(tmp_path, monkeypatch, capsys) -> None:
    """``python -m xlt.audit ... data.source=hub data.hub_mirror=DIR`` reads DIR (load_split outside
    the Runner is configured by its entry point), never the hub repos themselves."""
    from xlt.audit import cli as audit
    from xlt.tasks.registry import all_tasks

    for repo in {hub.path for spec in all_tasks().values() for hub in spec.hub.values()}:
        (tmp_path / repo).mkdir(parents=True, exist_ok=True)
    calls = []

    def fake_load(path, name=None, split=None, revision=None):
        calls.append(path)
        raise FileNotFoundError("no rows here")

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    audit.main(["+intermediate=mnli", "+target=xnli", "data.source=hub", f"data.hub_mirror={tmp_path}"])
    assert calls and all(path.startswith(str(tmp_path)) for path in calls), calls[:3]
