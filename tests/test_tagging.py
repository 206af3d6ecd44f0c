"""Token tagging: UD-POS (XTREME's conversion), PAN-X and CCG readers on real files and fixtures,
windows that give every word of a long sentence back, the word-level metric, and fast dev runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xlt.data.features import Collator, featurize
from xlt.data.features_tagging import IGNORE, windows
from xlt.metrics.tagging import MISSING, WordTagScore
from xlt.orchestration.run import run
from xlt.results.rows import read_results
from xlt.tasks import DataError, get_task
from xlt.tasks.loading import MissingDataError, load_split
from xlt.tasks.tagging import (
    CCG_NUM_LABELS,
    PANX_LABELS,
    PANX_LANGS,
    UPOS_LABELS,
    ccg_supertag_inventory,
    read_ccgbank_auto,
    read_panx_raw,
    read_ud_conllu,
)

UPOS = {name: i for i, name in enumerate(UPOS_LABELS)}
SMALL = ("scale.per_device_batch_size=8", "target.batch_size=8", "target.eval_batch_size=16",
         "target.max_train_examples=32", "target.max_eval_examples=16")  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    from xlt.e5 import ensure_e5_small

    return AutoTokenizer.from_pretrained(ensure_e5_small(tmp_path_factory.mktemp("e5") / "e5"))


# -- UD-POS ------------------------------------------------------------------------------------------


def test_udpos_english_train_pools_the_three_treebanks_in_file_name_order(data_dir: Path) -> None:
    loaded = load_split(get_task("udpos"), "train", "en", "local", data_dir)
    assert len(loaded.examples) == 17_500 == 12_543 + 3_176 + 1_781
    assert [Path(p).name for p in loaded.origin.split(" + ")] == [
        "en_ewt-ud-train.conllu", "en_lines-ud-train.conllu", "en_partut-ud-train.conllu",
    ]  # fmt: skip
    first = loaded.examples[0]
    assert first["words"][:4] == ["Al", "-", "Zaman", ":"]
    assert [UPOS_LABELS[i] for i in first["labels"][:4]] == ["PROPN", "PUNCT", "PROPN", "PUNCT"]
    assert len(load_split(get_task("udpos"), "dev", "en", "local", data_dir).examples) == 3_190


@pytest.mark.parametrize(
    ("lang", "sentences"), [("en", 2_077 + 1_035 + 1_000 + 153), ("de", 977), ("ja", 550), ("ar", 1_000), ("vi", 800),
                            ("zh", 500), ("tl", 55), ("yo", 100)],
)  # fmt: skip
def test_udpos_test_treebanks(data_dir: Path, lang: str, sentences: int) -> None:
    examples = load_split(get_task("udpos"), "test", lang, "local", data_dir).examples
    assert len(examples) == sentences  # the MANIFEST counts: no sentence of these files is all "_"
    assert all(len(ex["words"]) == len(ex["labels"]) and all(ex["words"]) for ex in examples)


def test_udpos_fused_forms_take_the_tag_of_the_span_head(data_dir: Path) -> None:
    """Multi-word tokens become one word: Spanish del/al are ADP (de+el tie, ADP precedes DET)."""
    examples = load_split(get_task("udpos"), "test", "es", "local", data_dir).examples
    tags = {}
    for ex in examples:
        for w, t in zip(ex["words"], ex["labels"], strict=True):
            if w in ("del", "al"):
                tags.setdefault(w, set()).add(UPOS_LABELS[t])
    assert tags["del"] >= {"ADP"} and tags["al"] >= {"ADP"}
    words = [w for ex in examples for w in ex["words"]]
    assert words.count("del") > 100  # the fused form replaced "de" + "el"


CONLLU = """\
# sent_id = 1
1-2\tdel\t_\t_\t_\t_\t_\t_\t_\t_
1\tde\tde\tADP\t_\t_\t3\tcase\t3:case\t_
2\tel\tel\tDET\t_\t_\t3\tdet\t3:det\t_
3\tlibro\tlibro\tNOUN\t_\t_\t0\troot\t0:root\t_
4-5\tdárselo\t_\t_\t_\t_\t_\t_\t_\t_
4\tdár\tdar\tVERB\t_\t_\t3\tacl\t3:acl\t_
5\tselo\tse\tPRON\t_\t_\t4\tobj\t4:obj\t_
5.1\tes\tser\tAUX\t_\t_\t_\t_\t3:cop\t_
6\tna\u200cme\tname\tNOUN\t_\t_\t3\tnmod\t3:nmod\t_
7\tcông ty\tcông ty\tNOUN\t_\t_\t3\tnmod\t3:nmod\t_

1\t_\t_\tNOUN\t_\t_\t0\troot\t_\t_
2\t_\t_\tVERB\t_\t_\t1\tdep\t_\t_
3\tx\t_\tX\t_\t_\t1\tdep\t_\t_

1-2\tau\t_\t_\t_\t_\t_\t_\t_\t_
1\tà\tà\tADP\t_\t_\t3\tcase\t3:case|2:x\t_
2\tle\tle\tDET\t_\t_\t3\tdet\t3:det\t_
3\tmarché\tmarché\tNOUN\t_\t_\t0\troot\t_\t_
"""


def test_xtreme_conversion_on_a_synthetic_treebank(tmp_path: Path) -> None:
    path = tmp_path / "es_toy-ud-test.conllu"
    path.write_text(CONLLU, encoding="utf-8")
    sentences = list(read_ud_conllu(path, "es"))
    assert len(sentences) == 2  # the all-but-one "_" sentence is dropped
    first, third = sentences
    # del: a tie between de (ADP) and el (DET) -> ADP; dárselo: dár is the single highest -> VERB;
    # the empty node 5.1 is dropped; ZWNJ and spaces are removed from words.
    assert first["words"] == ["del", "libro", "dárselo", "name", "côngty"]
    assert [UPOS_LABELS[t] for t in first["labels"]] == ["ADP", "NOUN", "VERB", "NOUN", "NOUN"]
    # au: without DEPS, à and le tie and ADP wins; the enhanced arc 2:x puts "le" above "à" in the
    # graph the conversion builds (basic + enhanced arcs), so "le" is the single highest: DET.
    assert third["words"] == ["au", "marché"] and [UPOS_LABELS[t] for t in third["labels"]] == ["DET", "NOUN"]


def test_udpos_bad_input_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "en_bad-ud-test.conllu"
    path.write_text("1\tword\tword\tNOUN\t_\t_\t0\troot\t_\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"en_bad-ud-test.conllu:1: expected 10 tab-separated"):
        list(read_ud_conllu(path, "en"))
    path.write_text("1\tword\tword\tNOUNISH\t_\t_\t0\troot\t_\t_\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"en_bad-ud-test.conllu:1: unknown tag 'NOUNISH'"):
        list(read_ud_conllu(path, "en"))


# -- PAN-X -------------------------------------------------------------------------------------------


def test_panx_reader_strips_the_language_prefix(data_dir: Path) -> None:
    (sentence,) = read_panx_raw(data_dir / "panx/hf_dummy/en/train", "en")
    assert sentence["words"] == [
        "R.H.",
        "Saunders",
        "(",
        "St.",
        "Lawrence",
        "River",
        ")",
        "(",
        "968",
        "MW",
        ")",
    ]
    assert [PANX_LABELS[t] for t in sentence["labels"]][:6] == [
        "B-ORG",
        "I-ORG",
        "O",
        "B-ORG",
        "I-ORG",
        "I-ORG",
    ]


def test_panx_reader_reads_every_language_fixture(data_dir: Path) -> None:
    for lang in PANX_LANGS:
        for split in ("train", "dev", "test"):
            sentences = list(read_panx_raw(data_dir / f"panx/hf_dummy/{lang}/{split}", lang))
            assert sentences and all(
                w and not w.startswith(f"{lang}:") for s in sentences for w in s["words"]
            )


def test_panx_fixtures_are_not_a_data_source(data_dir: Path) -> None:
    with pytest.raises(MissingDataError) as err:
        load_split(get_task("panx"), "test", "de", "local", data_dir)
    assert "hf_dummy" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("en:Paris\tB-LOC\tx\n", "expected 'lang:token<TAB>tag', got 3"),
        ("Paris\tB-LOC\n", "lacks the 'en:' prefix"),
        ("en:Paris\tB-CITY\n", "unknown tag 'B-CITY'"),
    ],
)
def test_panx_bad_input(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "train"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        list(read_panx_raw(path, "en"))
    assert str(path) in str(err.value)


# -- CCG ---------------------------------------------------------------------------------------------

FIRST_CCG_TAGS = ["N/N", "N", ",", "N/N", "N", r"(S[adj]\NP)\NP", ",", r"(S[dcl]\NP)/(S[b]\NP)", r"(S[b]\NP)/NP",
                  "NP[nb]/N", "N", r"((S\NP)\(S\NP))/NP", "NP[nb]/N", "N/N", "N", r"((S\NP)\(S\NP))/N[num]", "N[num]",
                  "."]  # fmt: skip


def test_ccgbank_reader_on_the_fixture(data_dir: Path) -> None:
    first, second = read_ccgbank_auto(data_dir / "ccg/fixture/ccgbank.txt")
    assert first["id"] == "wsj_0001.1" and second["id"] == "wsj_0001.2"
    assert (
        " ".join(first["words"])
        == "Pierre Vinken , 61 years old , will join the board as a nonexecutive director Nov. 29 ."
    )
    assert first["tags"] == FIRST_CCG_TAGS
    assert second["words"][:4] == ["Mr.", "Vinken", "is", "chairman"]


def ccgbank_tree(root: Path, data_dir: Path) -> Path:
    """A CCGbank-shaped AUTO tree whose train (00), dev (19) and test (22) sections hold the fixture."""
    auto = root / "ccgbank_1_1" / "data" / "AUTO"
    for section in ("00", "19", "22"):
        (auto / section).mkdir(parents=True)
        (auto / section / f"wsj_{section}01.auto").symlink_to(data_dir / "ccg/fixture/ccgbank.txt")
    return auto


def test_ccg_label_set_is_derived_from_the_files_present(data_dir: Path, tmp_path: Path) -> None:
    auto = ccgbank_tree(tmp_path, data_dir)
    inventory = ccg_supertag_inventory(auto)
    assert inventory[:3] == ("N/N", "N", ",") and len(inventory) == len(set(inventory)) <= CCG_NUM_LABELS
    spec = get_task("ccg")
    assert spec.num_labels == CCG_NUM_LABELS == 1363
    train = load_split(spec, "train", "en", "local", tmp_path)
    assert len(train.examples) == 2  # only section 00 is train; 19 is dev, 22 test
    assert [inventory[i] for i in train.examples[0]["labels"]] == FIRST_CCG_TAGS
    assert len(load_split(spec, "dev", "en", "local", tmp_path).examples) == 2


def test_ccg_without_ccgbank_is_one_line(data_dir: Path) -> None:
    with pytest.raises(MissingDataError) as err:
        load_split(get_task("ccg"), "train", "en", "local", data_dir)
    assert "ccgbank" in str(err.value) and "\n" not in str(err.value)


# -- Windows and the word-level metric ----------------------------------------------------------------


def test_windows_never_split_a_word_and_cover_every_word() -> None:
    pieces = [[1], [2, 3], [4, 5, 6], [7], [8, 9]]
    assert windows(pieces, 3) == [(0, 2), (2, 3), (3, 5)]
    assert windows(pieces, 100) == [(0, 5)]


def test_long_sentence_windows_give_every_word_back(data_dir: Path, tokenizer) -> None:
    """The longest English training sentence, cut into 16-token windows, is scored word for word."""
    examples = load_split(get_task("udpos"), "train", "en", "local", data_dir).examples
    longest = max(examples, key=lambda ex: len(ex["words"]))
    assert len(longest["words"]) > 100
    feats = featurize([longest], "tagging", tokenizer, 16, None, {"test": "long"})
    assert len(feats) > len(longest["words"]) // 14  # many windows, none beyond 16 tokens
    assert all(n <= 16 for n in feats["length"]) and set(feats["example_idx"]) == {0}
    word_index = [w for row in feats["word_index"] for w in row if w != IGNORE]
    assert word_index == list(range(len(longest["words"])))  # each word once, in order
    for row_labels, row_words in zip(feats["labels"], feats["word_index"], strict=True):
        assert [lab for lab, w in zip(row_labels, row_words, strict=True) if w != IGNORE] == [
            longest["labels"][w] for w in row_words if w != IGNORE
        ]
    # Gold labels as predictions, one window per batch in reverse order: the metric reassembles them.
    metric = WordTagScore("acc", [longest["labels"]], UPOS_LABELS)
    f1 = WordTagScore("f1", [longest["labels"]], UPOS_LABELS)
    for row in reversed(list(feats)):
        batch = Collator(tokenizer)([{k: row[k] for k in ("labels", "word_index", "example_idx")}])
        preds = batch["labels"].clamp(min=0)
        metric.update(preds, batch["example_idx"], batch["word_index"])
        f1.update(preds, batch["example_idx"], batch["word_index"])
    gold, pred = metric.sentences()
    assert gold == pred == [[UPOS_LABELS[t] for t in longest["labels"]]]
    assert float(metric.compute()) == 100.0 and float(f1.compute()) == 100.0


def test_word_metric_is_seqeval_0_0_12_and_counts_unscored_words_wrong() -> None:
    names = PANX_LABELS
    gold = [[1, 2, 0, 5], [0, 3]]  # B-PER I-PER O B-LOC | O B-ORG
    metric = WordTagScore("f1", gold, names)
    # Sentence 0 fully predicted with the LOC wrong; sentence 1 has only word 0 scored.
    metric.update(torch.tensor([[1, 2, 0, 0]]), torch.tensor([0]), torch.tensor([[0, 1, 2, 3]]))
    metric.update(torch.tensor([[0, 3]]), torch.tensor([1]), torch.tensor([[0, IGNORE]]))
    gold_s, pred_s = metric.sentences()
    assert pred_s[1] == ["O", MISSING]
    # gold chunks PER, LOC, ORG; predicted PER and a chunk of the unscored label -> P 1/2, R 1/3, F1 40
    assert float(metric.compute()) == pytest.approx(40.0)
    assert float(WordTagScore("acc", gold, names).compute()) != float(
        WordTagScore("acc", gold, names).compute()
    )  # NaN


# -- Fast dev runs -------------------------------------------------------------------------------------


def test_fast_dev_run_ccg_then_udpos(compose_cfg, data_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    ccgbank_tree(data, data_dir)
    (data / "ud_pos").symlink_to(data_dir / "ud_pos")
    cfg = compose_cfg(
        "model=tiny", "+intermediate=ccg", "+target=udpos", "debug=fdr", f"data.dir={data}", "data.source=local",
        "target.languages=[en,de,ja]", "intermediate.batch_size=8", "intermediate.eval_batch_size=16", *SMALL,
    )  # fmt: skip
    summary = run(cfg, tmp_path / "run")
    records = read_results(tmp_path / "run" / "results.jsonl")
    assert {(r["stage"], r["task"], r["split"], r["metric"]) for r in records if r["language"] == "en"} == {
        ("intermediate", "ccg", "dev", "acc"), ("target", "udpos", "dev", "f1"), ("target", "udpos", "dev", "acc"),
        ("target", "udpos", "test", "f1"), ("target", "udpos", "test", "acc"),
        ("target", "udpos", "dev_heldout", "f1"), ("target", "udpos", "dev_heldout", "acc"),
    }  # fmt: skip
    assert {"test/udpos/de/f1", "test/udpos/ja/acc", "test/udpos/gap/f1"} <= set(summary)


def test_fast_dev_run_panx_on_fixture_layout(compose_cfg, data_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for lang in ("en", "de", "zh"):
        (data / "panx_dataset").mkdir(parents=True, exist_ok=True)
        (data / "panx_dataset" / lang).symlink_to(data_dir / "panx/hf_dummy" / lang)
    cfg = compose_cfg("model=tiny", "+target=panx", "debug=fdr", f"data.dir={data}", "data.source=local",
                      "target.languages=[en,de,zh,ar]", *SMALL)  # fmt: skip
    summary = run(cfg, tmp_path / "run")
    assert {"dev/panx/en/f1", "test/panx/de/precision", "test/panx/zh/recall", "test/panx/gap/f1"} <= set(
        summary
    )
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert any("panx/test/ar" in line for line in state["skipped"])


@pytest.mark.slow
def test_e5_small_udpos_zero_shot_real_data(compose_cfg, data_dir: Path, tmp_path: Path) -> None:
    """e5-small trained on 1,500 real English UD sentences (one epoch), tested zero-shot on German,
    French and Japanese UD v2.5 (200 sentences each). German and French: far above a constant-tag
    baseline (every word NOUN, the most frequent tag; its token accuracy, since seqeval merges a run
    of one tag into one chunk and gives it F1 ~0) and below English. Japanese stays near that
    baseline; XTREME-R also reports ja/zh/ko/th as the lowest POS languages (see reference.md 7.12),
    so it is only required to trail English.

    Measured with these exact settings (via ``run``, 2026-11-28, shared 2-CPU machine, 262 s and 455 s
    under other load, same numbers both times): test
    F1 / token accuracy en 89.4 / 91.0, de 83.2 / 85.7, fr 82.3 / 85.1, ja 6.3 / 15.6; dev en 89.6.
    """
    import time

    langs = ["en", "de", "fr", "ja"]
    cfg = compose_cfg(
        "model=e5_small", "model.freeze_embeddings=true", "+target=udpos", f"target.languages=[{','.join(langs)}]",
        "target.max_train_examples=1500", "target.max_eval_examples=200", "target.epochs=1", "target.lr=1e-4",
        "target.max_seq_length=128", "scale.per_device_batch_size=16", "target.batch_size=16",
        "target.eval_batch_size=64",
    )  # fmt: skip
    started = time.perf_counter()
    summary = run(cfg, tmp_path)
    print(f"\ne5-small UD-POS en(1,500) -> {','.join(langs)}: {time.perf_counter() - started:.0f} s; "
          + ", ".join(f"{k}={v:.1f}" for k, v in summary.items() if k.startswith("test/")))  # fmt: skip
    spec = get_task("udpos")
    for lang in langs:
        gold = [
            t
            for ex in load_split(spec, "test", lang, "local", data_dir, limit=200).examples
            for t in ex["labels"]
        ]
        baseline = 100 * sum(spec.label_names[t] == "NOUN" for t in gold) / len(gold)
        if lang in ("en", "de", "fr"):
            assert summary[f"test/udpos/{lang}/acc"] > baseline + 40.0, (lang, baseline, summary)
            assert summary[f"test/udpos/{lang}/f1"] > 60.0, (lang, summary)
        if lang != "en":
            assert summary[f"test/udpos/{lang}/f1"] < summary["test/udpos/en/f1"], summary
            assert summary[f"test/udpos/{lang}/acc"] < summary["test/udpos/en/acc"], summary
