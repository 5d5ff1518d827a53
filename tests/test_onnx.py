"""The ONNX encoder and its export: agreement with PyTorch, crash safety, checksums, and a torch-free
encoding process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_texts

from mrl.errors import MrlError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SRC = str(Path(__file__).resolve().parents[1] / "src")
INT8_MIN_COSINE = 0.995  # the tiny model's int8 graph at every prefix (all-MiniLM-L6-v2: docs/benchmarks.md)
TEXTS = ["a", "python library for images", " ".join(synthetic_texts(1, seed=9)[0].split() * 20),  # truncated
         *synthetic_texts(40, seed=5)]


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_fp32_graph_equals_pytorch_and_int8_stays_close(exported: Path) -> None:
    from mrl.encoders.runtime import OnnxEncoder, TorchEncoder, open_encoder

    torch_enc = open_encoder(str(exported), "torch")
    assert isinstance(torch_enc, TorchEncoder)
    for kind in ("query", "document"):
        ref = torch_enc.encode(TEXTS, kind)
        fp32 = open_encoder(str(exported), "onnx", threads=1).encode(TEXTS, kind, batch_size=7)
        assert fp32.dtype == np.float32 and fp32.shape == ref.shape == (len(TEXTS), 64)
        np.testing.assert_allclose(fp32, ref, atol=1e-5)
        int8 = open_encoder(str(exported), "onnx-int8", threads=1).encode(TEXTS, kind)
        np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
        for d in (8, 32, 64):
            from mrl.prefix import truncate

            assert (truncate(int8, d) * truncate(ref, d)).sum(axis=1).min() >= INT8_MIN_COSINE
    auto = open_encoder(str(exported))
    assert isinstance(auto, OnnxEncoder) and auto.runtime in ("openvino", "onnx-int8")  # (test_openvino.py)
    from mrl.export.quantize import computes_int8

    assert computes_int8(exported / "onnx" / "model_int8.onnx") and not computes_int8(exported / "onnx" / "model.onnx")
    assert auto.count_tokens(["a b", "c"]) == torch_enc.count_tokens(["a b", "c"])


def test_the_folder_records_files_checksums_and_agreement_and_still_loads_as_sentence_transformers(
        exported: Path, tiny_model_dir: Path) -> None:
    from mrl._fs import sha256
    from mrl.encoders.model import encode, load_model

    record = json.loads((exported / "mrl.json").read_text())["onnx"]
    assert set(record["runtimes"]) == {"onnx", "onnx-int8"}
    for entry in [record["tokenizer"], *record["runtimes"].values()]:
        assert sha256(exported / entry["file"]) == entry["sha256"]
    assert record["runtimes"]["onnx-int8"]["quantization"] == "dynamic"
    # a BERT model's layers are fused (attention, residual layer norms, biased GELU), and int8 runs the attention
    assert record["fused"]["Attention"] == 2 and record["fused"]["SkipLayerNormalization"] == 4
    import onnx

    ops = {n.op_type for n in onnx.load(str(exported / record["runtimes"]["onnx-int8"]["file"])).graph.node}
    assert "QAttention" in ops and "MatMulInteger" in ops
    cosine = record["agreement"]["onnx"]["cosine"]
    assert list(cosine) == ["32", "64"] and cosine["32"]["min"] > 0.99999
    assert record["agreement"]["onnx-int8"]["cosine"]["32"]["min"] >= INT8_MIN_COSINE
    x = encode(load_model(str(exported)), TEXTS)
    np.testing.assert_allclose(x, encode(load_model(str(tiny_model_dir)), TEXTS), atol=1e-6)


def test_a_damaged_graph_and_a_missing_export_are_refused(exported: Path, tiny_model_dir: Path,
                                                          tmp_path: Path) -> None:
    from mrl.encoders.runtime import open_encoder

    copy = tmp_path / "m"
    shutil.copytree(exported, copy)
    graph = copy / "onnx" / "model_int8.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(MrlError, match=r"model_int8.onnx: sha256 .* does not match .* recorded in .*mrl.json: the "
                                       r"file was altered or damaged; export again with `mrl export`"):
        open_encoder(str(copy), "onnx-int8")
    open_encoder(str(copy), "onnx")  # the untouched fp32 graph still opens
    with pytest.raises(MrlError, match=r"has no ONNX export .* run `mrl export"):
        open_encoder(str(tiny_model_dir), "onnx")
    with pytest.raises(MrlError, match="runtime 'tensorrt': expected one of auto, torch, onnx, onnx-int8, openvino"):
        open_encoder(str(exported), "tensorrt")


def test_encoding_with_the_onnx_runtime_imports_no_torch(exported: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from mrl.encoders.runtime import open_encoder
        enc = open_encoder({str(exported)!r}, "onnx-int8", threads=1)
        x = enc.encode(["a query", "a document about fonts"], "query")
        assert x.shape == (2, enc.dim), x.shape
        calm = open_encoder({str(exported)!r}, "onnx-int8", threads=2, spin=False)  # the service's: no spinning
        assert abs(calm.encode(["a query", "a document about fonts"], "query") - x).max() < 1e-5
        heavy = sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules)
        print("heavy:", heavy)
    """)
    env = {**os.environ, "PYTHONPATH": SRC}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout, result.stdout


def test_an_export_killed_half_way_leaves_the_destination_untouched(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    out.mkdir()  # an empty destination is allowed, and must stay as it was
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import mrl.export.onnx as ex
        def killed(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)  # after the fp32 graph is written, before int8
        ex.quantize = killed
        ex.export(ex.ExportConfig({str(tiny_model_dir)!r}, Path({str(out)!r}), quantize="int8"))
    """)
    env = {**os.environ, "PYTHONPATH": SRC}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == -9, result.stderr
    assert out.is_dir() and list(out.iterdir()) == []
    (left,) = _leftovers(out)  # the hidden work folder, with the fp32 graph in it
    assert (tmp_path / left / "onnx" / "model.onnx").is_file()


def test_a_failure_half_way_removes_its_work_folder(tiny_model_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import mrl.export.onnx as ex

    def broken(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ex, "quantize", broken)
    out = tmp_path / "m"
    with pytest.raises(OSError, match="disk full"):
        ex.export(ex.ExportConfig(str(tiny_model_dir), out, quantize="int8"))
    assert list(tmp_path.iterdir()) == []




def test_the_service_with_an_exported_model_imports_no_torch(exported: Path, tmp_path: Path) -> None:
    """Build an index from the exported model's own vectors, then serve it in a process that must not
    import torch: search by text, /v1/embeddings, an upsert of texts."""
    script = f"""
import sys
import numpy as np
from fastapi.testclient import TestClient
from mrl.encoders.runtime import open_encoder
from mrl.index import MrlIndex
from mrl.serve import ServeSettings, create_app
texts = ["a package for networking", "a library of numerics", "a tool for fonts", "tests and more tests"]
encoder = open_encoder({str(exported)!r}, "onnx")
MrlIndex.build({str(tmp_path / 'idx')!r}, encoder.encode(texts, "document"), [f"d{{i}}" for i in range(4)],
               model={str(exported)!r}, first_stages=["int8@16"])
client = TestClient(create_app(ServeSettings({str(tmp_path / 'idx')!r}, runtime="onnx")))
hits = client.post("/search", json={{"query": texts[1], "k": 1}}).json()["results"][0]
emb = client.post("/v1/embeddings", json={{"input": texts[:2], "dimensions": 16}}).json()["data"]
up = client.post("/upsert", json={{"ids": ["d9"], "texts": ["a new package"]}}).json()
heavy = sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules)
print(hits[0]["id"], len(emb), len(emb[0]["embedding"]), up["count"], heavy)
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["d1", "2", "16", "5", "[]"], result.stdout


def test_every_command_that_encodes_takes_threads(exported: Path, tiny_beir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``--threads`` reaches the ONNX session (its intra-op threads) from encode, eval, index build, add and
    search with text, and PyTorch's thread count with ``--runtime torch``."""
    import torch
    from typer.testing import CliRunner

    from mrl.cli.main import app
    from mrl.encoders import onnx_runtime

    seen: list[int] = []
    real = onnx_runtime.OnnxEncoder.__init__

    def spy(self: onnx_runtime.OnnxEncoder, *args: object, **kwargs: object) -> None:
        real(self, *args, **kwargs)  # type: ignore[arg-type]
        seen.append(self.engine.threads)

    monkeypatch.setattr(onnx_runtime.OnnxEncoder, "__init__", spy)
    runner = CliRunner()
    model, data, idx = str(exported), str(tiny_beir), str(tmp_path / "idx")
    commands = [
        ["encode", "--model", model, "--data", data, "--out", str(tmp_path / "enc"), "--runtime", "onnx"],
        ["eval", "--model", model, "--data", data, "--runtime", "onnx-int8", "--dims", "16,64"],
        ["index", "build", "--out", idx, "--model", model, "--data", data, "--runtime", "onnx"],
        ["search", idx, "python library", "--runtime", "onnx-int8"],
        ["index", "add", idx, "--data", data, "--runtime", "onnx"],  # the corpus again: an upsert
    ]
    for n, args in enumerate(commands, start=1):
        result = runner.invoke(app, [*args, "--threads", str(n)])
        assert result.exit_code == 0, result.output
        assert seen[-1] == n, (args, seen)
    before = torch.get_num_threads()
    try:
        result = runner.invoke(app, ["encode", "--model", model, "--data", data, "--out", str(tmp_path / "t"),
                                     "--runtime", "torch", "--threads", "1"])
        assert result.exit_code == 0 and torch.get_num_threads() == 1, result.output
    finally:
        torch.set_num_threads(before)
