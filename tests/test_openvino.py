"""The ``openvino`` runtime: the exported fp32 graph compiled by OpenVINO (bfloat16 where the CPU has
it), chosen by ``auto`` only where it computes in bfloat16, measured at export, torch-free."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_texts

from mrl.encoders import graph_engines, onnx_runtime
from mrl.encoders.runtime import open_encoder
from mrl.errors import MrlError
from mrl.prefix import truncate

pytest.importorskip("openvino")

TEXTS = ["a", "python library for images", *synthetic_texts(30, seed=3)]
MIN_COSINE = 0.999  # bfloat16 against fp32, at every prefix of the tiny model (MiniLM: 0.99998)


def test_openvino_runs_the_fp32_graph(exported: Path) -> None:
    fp32 = open_encoder(str(exported), "onnx", threads=1)
    ov = open_encoder(str(exported), "openvino", threads=1)
    assert ov.engine.precision in ("bf16", "f32") and ov.engine.threads == 1
    for kind in ("query", "document"):
        ref, x = fp32.encode(TEXTS, kind), ov.encode(TEXTS, kind, batch_size=5)
        assert x.dtype == np.float32 and x.shape == ref.shape
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-3)
        for d in (8, 32, 64):
            assert (truncate(x, d) * truncate(ref, d)).sum(axis=1).min() >= MIN_COSINE, d
    with ThreadPoolExecutor(4) as pool:  # an inference request per thread
        together = list(pool.map(lambda t: ov.encode([t], "query"), TEXTS))
    np.testing.assert_allclose(np.concatenate(together), ov.encode(TEXTS, "query", batch_size=1), atol=1e-6)


def test_auto_prefers_openvino_only_where_it_computes_in_bfloat16(exported: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_runtime, "openvino_computes_bf16", lambda: True)
    assert onnx_runtime.exported_runtimes(exported) == ["openvino", "onnx-int8", "onnx"]
    assert open_encoder(str(exported)).runtime == "openvino"
    monkeypatch.setattr(onnx_runtime, "openvino_computes_bf16", lambda: False)
    assert open_encoder(str(exported)).runtime == "onnx-int8"


def test_export_measures_openvino_against_pytorch(exported: Path) -> None:
    record = json.loads((exported / "mrl.json").read_text())["onnx"]
    assert set(record["runtimes"]) == {"onnx", "onnx-int8"}  # no graph of its own: it runs the fp32 one
    assert record["agreement"]["openvino"]["cosine"]["32"]["min"] >= MIN_COSINE


def test_without_openvino_the_runtime_names_the_install(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    graph_engines.openvino_computes_bf16.cache_clear()
    try:
        with pytest.raises(MrlError, match=r"the openvino runtime needs OpenVINO: pip install 'mrl\[openvino\]'"):
            open_encoder(str(exported), "openvino")
        assert onnx_runtime.exported_runtimes(exported) == ["onnx-int8", "onnx"]
    finally:
        graph_engines.openvino_computes_bf16.cache_clear()


def test_a_folder_without_the_fp32_graph_has_no_openvino_runtime(exported: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(exported, copy)
    meta = json.loads((copy / "mrl.json").read_text())
    del meta["onnx"]["runtimes"]["onnx"]
    (copy / "mrl.json").write_text(json.dumps(meta))
    with pytest.raises(MrlError, match=r"has no 'openvino' export \(it has: onnx-int8\); run `mrl export`"):
        open_encoder(str(copy), "openvino")


def test_encoding_with_openvino_imports_no_torch(exported: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from mrl.encoders.runtime import open_encoder
        x = open_encoder({str(exported)!r}, "openvino", threads=1).encode(["a query", "fonts"], "query")
        assert x.shape == (2, 64), x.shape
        print("heavy:", sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "heavy: []" in result.stdout, result.stdout
