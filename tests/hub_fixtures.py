"""Hub-shaped fixtures: the official files in the shared data directory turned into the rows the
Hugging Face hub serves (field names, types, ClassLabel orders, stripping, id formats, split and
config names as the hub's builders make them; facts in ../shared/docs/hub.md), written as a local
*mirror* (xlt/tasks/hub.py): per repo, one parquet file per config and split and a README whose YAML
names the configs, read by ``datasets.load_dataset`` itself. Beside it, a *local* data directory of
links in the layouts xlt reads, to the same files, so a test can compare both sources.

Each builder here parses the official file on its own (not with xlt's readers), as the hub's
loading script or parquet conversion does.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets import ClassLabel, Features, Sequence, Value

NLI = ClassLabel(names=["entailment", "neutral", "contradiction"])
NLI_LETTER = {"e": 0, "n": 1, "c": 2}
PANX = ClassLabel(names=["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"])
SQUAD = Features({
    "id": Value("string"), "title": Value("string"), "context": Value("string"), "question": Value("string"),
    "answers": Sequence({"text": Value("string"), "answer_start": Value("int32")}),
})  # fmt: skip
XQUAD = Features({k: v for k, v in SQUAD.items() if k != "title"})
PARQUET_EXPORT = "refs/convert/parquet"
# google/xtreme udpos.*: the pos_tags ClassLabel names in the hub builder's order and the config names
# (the English language name), written out here from the hub's facts (../shared/docs/hub.md, the xtreme
# loading script), not taken from xlt, so that a wrong order or name in xlt fails the comparison.
HUB_UPOS = ClassLabel(names=["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
                             "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X"])  # fmt: skip
HUB_UDPOS_CONFIG = {
    "en": "udpos.English",
    "de": "udpos.German",
    "vi": "udpos.Vietnamese",
    "ja": "udpos.Japanese",
}
UDPOS_LANGS = ("en", "de", "vi", "ja")  # UD-POS test sets mirrored (all 33: docs/hub-data.md)


def fake_commit(repo: str) -> str:
    return hashlib.sha1(f"mirror:{repo}".encode()).hexdigest()


def recorded_commit(repo: str) -> str:
    """What a read of the mirror records for ``repo``: marked as a mirror's, never a hub commit."""
    return "mirror:" + fake_commit(repo)


@dataclass
class Case:
    """One (task, split, language) served by both sources; ``limit``: compare the first rows."""

    task: str
    split: str
    lang: str
    limit: int | None = None


@dataclass
class Mirror:
    root: Path
    local: Path
    data: Path
    splits: dict[tuple[str, str | None], dict[str, tuple[list[dict[str, Any]], Features]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    cases: list[Case] = field(default_factory=list)

    def add(
        self, repo: str, config: str | None, split: str, rows: list[dict[str, Any]], features: Features
    ) -> None:
        self.splits[(repo, config)][split] = (rows, features)

    def link(self, layout: str, official: str) -> None:
        """The local layout path ``layout`` (as xlt looks for it) -> the official file."""
        target = self.local / layout
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(self.data / official)

    def write(self) -> None:
        repos: dict[str, list[tuple[str | None, dict[str, Any]]]] = defaultdict(list)
        for (repo, config), splits in self.splits.items():
            repos[repo].append((config, splits))
        for repo, configs in repos.items():
            export = repo.endswith("@" + PARQUET_EXPORT)
            base = self.root / repo
            base.mkdir(parents=True, exist_ok=True)
            (base / "COMMIT").write_text(fake_commit(repo) + "\n")
            card = ["---", "configs:"]
            for config, splits in configs:
                name = config or "default"
                card.append(f"- config_name: {name}\n  data_files:")
                for split, (rows, features) in splits.items():
                    columns = {key: [row[key] for row in rows] for key in features}
                    ds = datasets.Dataset.from_dict(columns, features=features)
                    # The hub's parquet export: <config>/<split>/0000.parquet, no card; a repo: a card.
                    rel = (
                        f"{name}/{split}/0000.parquet" if export else f"{name}/{split}-00000-of-00001.parquet"
                    )
                    (base / rel).parent.mkdir(parents=True, exist_ok=True)
                    ds.to_parquet(str(base / rel))
                    card.append(f"  - split: {split}\n    path: {rel}")
            if not export:
                (base / "README.md").write_text("\n".join(card) + "\n---\n")


def _tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _squad_rows(path: Path, strip: bool, title: bool = True) -> list[dict[str, Any]]:
    """SQuAD JSON as the hub's builders yield it; ``strip``: the XTREME/TyDiQA builders strip the
    context, question and answer texts and keep ``answer_start``."""
    rows = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"].strip() if strip else paragraph["context"]
            for qa in paragraph["qas"]:
                row = {
                    "id": qa["id"],
                    "context": context,
                    "question": qa["question"].strip() if strip else qa["question"],
                    "answers": {
                        "text": [a["text"].strip() if strip else a["text"] for a in qa["answers"]],
                        "answer_start": [a["answer_start"] for a in qa["answers"]],
                    },
                }
                if title:
                    row["title"] = article.get("title", "").strip() if strip else article.get("title", "")
                rows.append(row)
    return rows


def _conllu_sentences(paths: list[Path]) -> list[dict[str, Any]]:
    """google/xtreme udpos.*: every line of >= 10 tab fields whose form and UPOS are not "_" (so the
    split-off sub-tokens of a multi-word token stay, its fused form goes); a blank line ends a sentence."""
    rows = []
    for path in paths:
        tokens: list[str] = []
        tags: list[int] = []
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                if len(row) >= 10 and row[1] != "_" and row[3] != "_":
                    tokens.append(row[1])
                    tags.append(HUB_UPOS.str2int(row[3]))
                if not row and tokens:
                    rows.append({"tokens": tokens, "pos_tags": tags})
                    tokens, tags = [], []
        if tokens:
            rows.append({"tokens": tokens, "pos_tags": tags})
    return rows


def build(root: Path, data: Path) -> Mirror:  # noqa: C901,PLR0915  (one block per hub location)
    """Write the mirror under ``root/hub`` and the linked local layouts under ``root/local``."""
    m = Mirror(root / "hub", root / "local", data)
    nli = Features({"premise": Value("string"), "hypothesis": Value("string"), "label": NLI})

    # nyu-mll/glue mnli / qqp (parquet; GLUE's tsv columns renamed, labels as ClassLabels, idx added)
    glue_nli = Features({**nli, "idx": Value("int32")})
    for split, file in (("train", "train"), ("validation_matched", "dev_matched")):
        rows = _tsv(data / f"mnli/hf_dummy/glue_MNLI/{file}.tsv")
        m.add("nyu-mll/glue", "mnli", split, [
            {"premise": r["sentence1"], "hypothesis": r["sentence2"], "label": NLI.str2int(r["gold_label"]), "idx": i}
            for i, r in enumerate(rows)], glue_nli)  # fmt: skip
        m.link(f"glue_data/MNLI/{file}.tsv", f"mnli/hf_dummy/glue_MNLI/{file}.tsv")
    qqp = Features({"question1": Value("string"), "question2": Value("string"),
                    "label": ClassLabel(names=["not_duplicate", "duplicate"]), "idx": Value("int32")})  # fmt: skip
    for split, file in (("train", "train"), ("validation", "dev")):
        rows = _tsv(data / f"qqp/hf_dummy/QQP/{file}.tsv")
        m.add("nyu-mll/glue", "qqp", split, [
            {"question1": r["question1"], "question2": r["question2"], "label": int(r["is_duplicate"]), "idx": i}
            for i, r in enumerate(rows)], qqp)  # fmt: skip
        m.link(f"glue_data/QQP/{file}.tsv", f"qqp/hf_dummy/QQP/{file}.tsv")
    m.cases += [Case("mnli", "train", "en"), Case("mnli", "dev", "en"), Case("qqp", "train", "en"),
                Case("qqp", "dev", "en")]  # fmt: skip

    # stanfordnlp/snli: -1 where no annotator consensus ("-")
    for split in ("validation", "test"):
        ours = "dev" if split == "validation" else "test"
        lines = [(data / f"snli/esnli_tokenized/{n}.{ours}").read_text(encoding="utf-8").splitlines()
                 for n in ("s1", "s2", "labels")]  # fmt: skip
        m.add("stanfordnlp/snli", None, split, [
            {"premise": p, "hypothesis": h, "label": -1 if lab == "-" else NLI.str2int(lab)}
            for p, h, lab in zip(*lines, strict=True)][:300], nli)  # fmt: skip
        for n in ("s1", "s2", "labels"):
            m.link(f"snli/esnli_tokenized/{n}.{ours}", f"snli/esnli_tokenized/{n}.{ours}")
        m.cases.append(Case("snli", ours, "en", limit=250))

    # facebook/anli: train from the official jsonl fixtures, dev from the analysis CSV (same rows)
    anli = Features({"uid": Value("string"), **nli, "reason": Value("string")})
    for rnd in ("r1", "r2", "r3"):
        path = f"anli/hf_dummy/anli_v0.1/R{rnd[1]}/train.jsonl"
        records = [
            json.loads(line) for line in (data / path).read_text(encoding="utf-8").splitlines() if line
        ]
        m.add("facebook/anli", None, f"train_{rnd}", [
            {"uid": r["uid"], "premise": r["context"], "hypothesis": r["hypothesis"],
             "label": NLI_LETTER[r["label"]], "reason": r.get("reason", "")} for r in records], anli)  # fmt: skip
        m.link(f"anli/anli_v1.0/R{rnd[1]}/train.jsonl", path)
        with (data / f"anli/ANLI_analysis_{rnd}_dev.csv").open(encoding="utf-8", newline="") as f:
            dev = list(csv.DictReader(f))
        m.add("facebook/anli", None, f"dev_{rnd}", [
            {"uid": r["uid"], "premise": r["context"], "hypothesis": r["statement"],
             "label": NLI_LETTER[r["gold_label"]], "reason": r["reason"]} for r in dev], anli)  # fmt: skip
        m.link(f"anli/ANLI_analysis_{rnd}_dev.csv", f"anli/ANLI_analysis_{rnd}_dev.csv")
        m.cases += [Case("anli_rounds", f"train_{rnd}", "en"), Case("anli_rounds", f"dev_{rnd}", "en")]

    # facebook/xnli {lang}: one config per language
    for lang in ("en", "sw"):
        for split, ours in (("validation", "dev"), ("test", "test")):
            rows = _tsv(data / f"xnli/{lang}/{lang}.genre.{ours}.tsv")
            m.add("facebook/xnli", lang, split, [
                {"premise": r[f"sentence1_{lang}"], "hypothesis": r[f"sentence2_{lang}"], "label": NLI.str2int(r["label"])}
                for r in rows], nli)  # fmt: skip
            m.link(f"xnli/{lang}/{lang}.genre.{ours}.tsv", f"xnli/{lang}/{lang}.genre.{ours}.tsv")
            m.cases.append(Case("xnli", ours, lang))
    with (data / "xnli/de/xglue_de_test.tsv").open(encoding="utf-8", newline="") as f:
        de = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    m.add("facebook/xnli", "de", "test", [
        {"premise": p, "hypothesis": h, "label": NLI.str2int(lab)} for p, h, lab in de], nli)  # fmt: skip
    m.link("xnli/de/xglue_de_test.tsv", "xnli/de/xglue_de_test.tsv")
    m.cases.append(Case("xnli", "test", "de"))

    # google-research-datasets/paws-x {lang}: label ClassLabel ["0", "1"]
    paws = Features({"id": Value("int32"), "sentence1": Value("string"), "sentence2": Value("string"),
                     "label": ClassLabel(names=["0", "1"])})  # fmt: skip
    for lang, split, file, official in (("en", "train", "train", "pawsx/hf_dummy/en/train.tsv"),
                                        ("de", "validation", "dev_2k", "pawsx/de/dev_2k.tsv"),
                                        ("de", "test", "test_2k", "pawsx/de/test_2k.tsv")):  # fmt: skip
        rows = _tsv(data / official)
        m.add("google-research-datasets/paws-x", lang, split, [
            {"id": int(r["id"]), "sentence1": r["sentence1"], "sentence2": r["sentence2"], "label": int(r["label"])}
            for r in rows], paws)  # fmt: skip
        m.link(f"x-final/{lang}/{file}.tsv", official)
        m.cases.append(Case("pawsx", {"train": "train", "validation": "dev", "test": "test"}[split], lang))

    # Rowan/hellaswag: label is a string
    hs = Features({"ind": Value("int32"), "activity_label": Value("string"), "ctx_a": Value("string"),
                   "ctx_b": Value("string"), "ctx": Value("string"), "endings": Sequence(Value("string")),
                   "source_id": Value("string"), "split": Value("string"), "split_type": Value("string"),
                   "label": Value("string")})  # fmt: skip
    for split, file in (("train", "train"), ("validation", "val")):
        path = f"hellaswag/hf_dummy/hellaswag_{file}.jsonl"
        records = [
            json.loads(line) for line in (data / path).read_text(encoding="utf-8").splitlines() if line
        ]
        m.add("Rowan/hellaswag", None, split, [{**{k: r[k] for k in hs if k != "label"}, "label": str(r["label"])}
                                                for r in records], hs)  # fmt: skip
        m.link(f"hellaswag/hellaswag_{file}.jsonl", path)
        m.cases.append(Case("hellaswag", "train" if split == "train" else "dev", "en"))

    # allenai/cosmos_qa: a loading script; its parquet export (refs/convert/parquet, config "default")
    cosmos = Features({k: Value("string") for k in ("id", "context", "question", "answer0", "answer1", "answer2",
                                                     "answer3")} | {"label": Value("int32")})  # fmt: skip
    for split, official, layout in (("train", "cosmosqa/hf_dummy/train.csv", "cosmosqa/train.csv"),
                                    ("validation", "cosmosqa/valid.csv", "cosmosqa/valid.csv")):  # fmt: skip
        with (data / official).open(encoding="utf-8", newline="") as f:
            rows = [{**r, "label": int(r["label"])} for r in csv.DictReader(f)]
        m.add(f"allenai/cosmos_qa@{PARQUET_EXPORT}", None, split, rows, cosmos)
        m.link(layout, official)
        m.cases.append(Case("cosmosqa", "train" if split == "train" else "dev", "en"))

    # tau/commonsense_qa
    csqa = Features({"id": Value("string"), "question": Value("string"), "question_concept": Value("string"),
                     "choices": Sequence({"label": Value("string"), "text": Value("string")}),
                     "answerKey": Value("string")})  # fmt: skip
    for split, file in (("train", "train"), ("validation", "dev")):
        path = f"commonsenseqa/{file}_rand_split.jsonl"
        records = [json.loads(line) for line in (data / path).read_text(encoding="utf-8").splitlines()[:300]]
        m.add("tau/commonsense_qa", None, split, [
            {"id": r["id"], "question": r["question"]["stem"], "question_concept": r["question"]["question_concept"],
             "choices": {"label": [c["label"] for c in r["question"]["choices"]],
                         "text": [c["text"] for c in r["question"]["choices"]]},
             "answerKey": r["answerKey"]} for r in records], csqa)  # fmt: skip
        m.link(path, path)
        m.cases.append(Case("csqa", "train" if split == "train" else "dev", "en", limit=300))

    # rajpurkar/squad, squad_v2 (contexts not stripped)
    for repo, split, official, layout, task in (
        ("rajpurkar/squad", "validation", "squad_v1.1/dev-v1.1.explorer.json", None, "squad"),
        ("rajpurkar/squad_v2", "validation", "squad_v2.0/dev-v2.0.explorer.json", None, "squad2"),
        (
            "rajpurkar/squad_v2",
            "train",
            "squad_v2.0/hf_dummy/train-v2.0.json",
            "squad_v2.0/train-v2.0.json",
            "squad2",
        ),
    ):
        m.add(repo, None, split, _squad_rows(data / official, strip=False)[:400], SQUAD)
        m.link(layout or official, official)
        m.cases.append(Case(task, "train" if split == "train" else "dev", "en", limit=400))
    squad_train = _squad_rows(data / "squad_v1.1/allennlp_fixture_squad_train_excerpt.json", strip=False)
    m.add("rajpurkar/squad", None, "train", squad_train, SQUAD)
    m.link("squad/train-v1.1.json", "squad_v1.1/allennlp_fixture_squad_train_excerpt.json")
    m.cases.append(Case("squad", "train", "en"))

    # google/xtreme: XQuAD.{lang} (stripped), MLQA.{lang}.{lang} (stripped, with title)
    for path in sorted((data / "xquad").glob("xquad.*.json")):
        lang = path.name.split(".")[1]
        m.add(
            "google/xtreme", f"XQuAD.{lang}", "validation", _squad_rows(path, strip=True, title=False), XQUAD
        )
        m.link(f"xquad/{path.name}", f"xquad/{path.name}")
        if lang != "ro":
            m.cases.append(Case("xquad", "test", lang))
    m.add("google/xtreme", "MLQA.de.de", "validation",
          _squad_rows(data / "mlqa/dev/dev-context-de-question-de.json", strip=True), SQUAD)  # fmt: skip
    m.link("mlqa/dev/dev-context-de-question-de.json", "mlqa/dev/dev-context-de-question-de.json")
    official = "mlqa/hf_dummy/MLQA_V1/test/test-context-en-question-en.json"
    m.add("google/xtreme", "MLQA.en.en", "test", _squad_rows(data / official, strip=True), SQUAD)
    m.link("MLQA_V1/test/test-context-en-question-en.json", official)
    m.cases += [Case("mlqa", "dev", "de"), Case("mlqa", "test", "en")]

    # google-research-datasets/tydiqa secondary_task: every language in one split, stripped
    for split, file in (("train", "train"), ("validation", "dev")):
        official = f"tydiqa/hf_dummy/tydiqa-goldp-v1.1-{file}.json"
        m.add("google-research-datasets/tydiqa", "secondary_task", split, _squad_rows(data / official, strip=True),
              SQUAD)  # fmt: skip
        layout = ("tydiqa/tydiqa-goldp-v1.1-train/tydiqa-goldp-v1.1-train.json" if file == "train"
                  else "tydiqa/tydiqa-goldp-v1.1-dev.json")  # fmt: skip
        m.link(layout, official)
    m.cases += [Case("tydiqa", "train", "fi"), Case("tydiqa", "test", "ar")]

    # google/xtreme udpos.{English name}: tokens, pos_tags (UPOS ClassLabel)
    upos = Features({"tokens": Sequence(Value("string")), "pos_tags": Sequence(HUB_UPOS)})
    by_lang: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for path in sorted((data / "ud_pos").glob("UD_*/*-ud-*.conllu"), key=lambda p: p.name):
        lang, split = path.name.split("_")[0], path.name.rsplit("-", 1)[1].split(".")[0]
        if lang in UDPOS_LANGS and split == "test":
            by_lang[(lang, split)].append(path)
            m.link(str(path.relative_to(data)), str(path.relative_to(data)))
    for (lang, split), paths in by_lang.items():
        hub_split = {"dev": "validation"}.get(split, split)
        m.add("google/xtreme", HUB_UDPOS_CONFIG[lang], hub_split, _conllu_sentences(paths), upos)

    # google/xtreme PAN-X.{lang}: tokens, ner_tags, langs from Rahimi's "lang:token<TAB>tag" files
    panx = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(PANX),
                     "langs": Sequence(Value("string"))})  # fmt: skip
    for lang in ("en", "de", "ar"):
        for split, file in (("train", "train"), ("validation", "dev"), ("test", "test")):
            rows, tokens, tags, langs = [], [], [], []
            for line in (data / f"panx/hf_dummy/{lang}/{file}").read_text(encoding="utf-8").splitlines() + [
                ""
            ]:
                if not line.strip():
                    if tokens:
                        rows.append({"tokens": tokens, "ner_tags": tags, "langs": langs})
                    tokens, tags, langs = [], [], []
                    continue
                word, tag = line.split("\t")
                prefix, token = word.split(":", 1)
                tokens.append(token)
                tags.append(PANX.str2int(tag.strip()))
                langs.append(prefix)
            m.add("google/xtreme", f"PAN-X.{lang}", split, rows, panx)
            m.link(f"panx_dataset/{lang}/{file}", f"panx/hf_dummy/{lang}/{file}")
            m.cases.append(Case("panx", {"validation": "dev"}.get(split, split), lang))

    # google/xtreme tatoeba.{iso3}: validation only, sentences with their newline
    tatoeba = Features({k: Value("string") for k in ("source_sentence", "target_sentence", "source_lang",
                                                      "target_lang")})  # fmt: skip
    for iso3, lang in (("deu", "de"), ("jpn", "ja"), ("swh", "sw")):
        src = (
            (data / f"tatoeba/tatoeba.{iso3}-eng.{iso3}")
            .read_text(encoding="utf-8")
            .splitlines(keepends=True)
        )
        eng = (data / f"tatoeba/tatoeba.{iso3}-eng.eng").read_text(encoding="utf-8").splitlines(keepends=True)
        m.add("google/xtreme", f"tatoeba.{iso3}", "validation", [
            {"source_sentence": s, "target_sentence": t, "source_lang": iso3, "target_lang": "eng"}
            for s, t in zip(src, eng, strict=True)], tatoeba)  # fmt: skip
        for side in (iso3, "eng"):
            m.link(f"tatoeba/tatoeba.{iso3}-eng.{side}", f"tatoeba/tatoeba.{iso3}-eng.{side}")
        m.cases.append(Case("tatoeba", "test", lang))
    m.write()
    return m
