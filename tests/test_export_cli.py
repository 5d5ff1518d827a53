"""mrl export: the Matryoshka guard and bad input (a clear error, nothing written)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import build_tiny_model, write_beir
from typer.testing import CliRunner

from mrl.cli.main import app
from mrl.encoders.graph_engines import openvino_installed

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

runner = CliRunner()


def _export(model: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["export", str(model), "--out", str(out), *extra])
    return result.exit_code, " ".join(result.output.split())


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _prefix_breaking_model(folder: Path) -> Path:
    """A tiny model whose first 16 outputs are ``c + 0.0035 * x_i``, ``c`` a constant coordinate (a hidden
    unit pinned by its LayerNorm): int8 weights, one scale per output row (1/127), round 0.0035 to zero,
    so int8 keeps only the constant at 16 dims while the other 48 outputs (identity rows) stay intact."""
    import torch
    from sentence_transformers import SentenceTransformer

    from mrl.encoders.head import add_linear_head

    model, _ = add_linear_head(SentenceTransformer(str(build_tiny_model(folder / "tiny", dropout=0.0)), device="cpu"))
    const = 63
    with torch.no_grad():
        norm = model[0].auto_model.encoder.layer[-1].output.LayerNorm
        norm.weight[const], norm.bias[const] = 0.0, 0.01  # every token: 0.01, so its mean-pooled value too
        weight = model[2].linear.weight  # (out, in)
        weight[:16] = 0.0
        weight[:16, const] = 1.0
        weight[range(16), range(16)] = 0.0035
    model.save(str(folder / "headed"))
    return folder / "headed"


def test_the_guard_refuses_an_int8_graph_that_breaks_a_short_prefix(tiny_beir: Path, tmp_path: Path) -> None:
    model = _prefix_breaking_model(tmp_path)
    out = tmp_path / "out"
    args = ["--quantize", "int8", "--calibrate", str(tiny_beir), "--split", "train", "--dims", "16,32"]
    code, output = _export(model, out, *args)
    assert code == 2, output
    assert "drops more than 0.005 against PyTorch: onnx-int8 at 16 dims loses" in output, output
    assert "Nothing was written" in output
    assert not out.exists() and _leftovers(out) == []
    code, output = _export(model, out, *args, "--accept-loss")
    assert code == 0, output
    record = json.loads((out / "mrl.json").read_text())["onnx"]
    cal = record["calibration"]
    measured = {"torch", "onnx", "onnx-int8", *(["openvino"] if openvino_installed() else [])}  # (test_openvino.py)
    assert cal["accepted_loss"] is True and set(cal["ndcg@10"]) == measured
    assert set(record["runtimes"]) == {"onnx", "onnx-int8"} and sorted(p.name for p in (out / "onnx").iterdir()) \
        == ["model.onnx", "model_int8.onnx", "tokenizer.json"]
    candidates = cal["int8_candidates"]["ndcg@10"]  # (static: activations calibrated, not int8 weights only)
    assert set(candidates) == {"dynamic", "dynamic, FFN down-projections fp32", "static"}
    for scores in candidates.values():  # every candidate loses the 16-dim prefix
        assert cal["ndcg@10"]["torch"]["16"] - scores["16"] > 0.005
    assert abs(cal["ndcg@10"]["torch"]["64"] - cal["ndcg@10"]["onnx-int8"]["64"]) <= 0.005  # the kept one
    assert record["runtimes"]["onnx-int8"]["quantization"] == cal["int8_candidates"]["kept"]
    assert abs(cal["ndcg@10"]["torch"]["16"] - cal["ndcg@10"]["onnx"]["16"]) < 1e-6


def test_bad_input_is_named_and_nothing_is_written(tiny_model_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    code, output = _export(tmp_path / "notes", out)
    assert code == 2 and "model folder" in output and "has neither modules.json nor config.json" in output, output
    code, output = _export(tmp_path / "nowhere", out)
    assert code == 2 and "model path does not exist" in output, output
    blank = write_beir(tmp_path / "blank", {"d1": " ", "d2": ""}, {"q1": ""}, {"dev": {"q1": {"d1": 1}}})
    code, output = _export(tiny_model_dir, out, "--quantize", "int8", "--calibrate", str(blank))
    assert code == 2 and "split 'dev' has no texts in its queries" in output, output
    code, output = _export(tiny_model_dir, out, "--quantize", "int4")
    assert code == 2 and "--quantize 'int4': expected one of none, int8" in output, output
    code, output = _export(tiny_model_dir, out, "--accept-loss")
    assert code == 2 and "--accept-loss only applies with --calibrate" in output, output
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    code, output = _export(tiny_model_dir, tmp_path / "taken")
    assert code == 2 and "--out " in output and "taken already exists" in output, output
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, output = _export(tiny_model_dir, out)
    assert code == 2 and "mrl export needs onnxruntime: pip install 'mrl[onnx]'" in output, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank", "notes", "taken"]


def test_a_calibrated_export_keeps_the_candidate_that_loses_least(tiny_model_dir: Path, tiny_beir: Path,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import mrl.export.check as check
    from mrl._fs import sha256
    from mrl.encoders.runtime import open_encoder

    real = check.calibration_scores

    def mixed_wins(*args: object, **kwargs: object) -> dict:
        scores = real(*args, **kwargs)  # type: ignore[arg-type]
        ndcg = scores["ndcg@10"]
        ndcg["onnx-int8"] = {d: s - 0.02 for d, s in ndcg["torch"].items()}
        ndcg["onnx-int8-static"] = {d: s - 0.01 for d, s in ndcg["torch"].items()}
        ndcg["onnx-int8-mixed"] = dict(ndcg["torch"])
        return scores

    monkeypatch.setattr(check, "calibration_scores", mixed_wins)
    out = tmp_path / "out"
    code, output = _export(tiny_model_dir, out, "--quantize", "int8", "--calibrate", str(tiny_beir), "--split", "test")
    assert code == 0 and "keeping the dynamic, FFN down-projections fp32 int8 graph" in output, output
    record = json.loads((out / "mrl.json").read_text())["onnx"]
    entry = record["runtimes"]["onnx-int8"]
    assert entry["quantization"] == "dynamic, FFN down-projections fp32" and entry["file"] == "onnx/model_int8.onnx"
    assert sha256(out / entry["file"]) == entry["sha256"]
    assert sorted(p.name for p in (out / "onnx").iterdir()) == ["model.onnx", "model_int8.onnx", "tokenizer.json"]
    assert record["calibration"]["int8_candidates"]["worst_loss"] == pytest.approx(
        {"dynamic": 0.02, "dynamic, FFN down-projections fp32": 0.0, "static": 0.01})
    open_encoder(str(out), "onnx-int8").encode(["a text"])


def test_eval_with_the_onnx_runtime_matches_torch_per_prefix(tiny_model_dir, tiny_beir, tmp_path):
    """`mrl eval --runtime onnx` scores an exported folder like PyTorch does (fp32: the same nDCG@10), with
    ``--xling`` too."""
    from mrl.data.beir import load_beir
    from mrl.export.config import ExportConfig
    from mrl.export.onnx import export

    out = tmp_path / "exported"
    export(ExportConfig(str(tiny_model_dir), out))
    # a cross-lingual folder whose one "language" holds 12 test queries reversed word by word
    ds = load_beir(tiny_beir, "test")
    lang = tmp_path / "xling" / "rev"
    (lang / "qrels").mkdir(parents=True)
    qids = sorted(ds.queries)[:12]
    (lang / "queries-test.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": " ".join(ds.queries[q].split()[::-1])}) + "\n" for q in qids))
    (lang / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q in qids for d, r in ds.qrels[q].items()))
    scores, xling = {}, {}
    for runtime in ("torch", "onnx"):
        result = runner.invoke(app, ["eval", "--model", str(out), "--data", str(tiny_beir), "--dims", "16,64",
                                     "--runtime", runtime, "--json", str(tmp_path / f"{runtime}.json"),
                                     "--xling", str(tmp_path / "xling")])
        assert result.exit_code == 0, result.output
        doc = json.loads((tmp_path / f"{runtime}.json").read_text())
        scores[runtime] = {d: v["ndcg@10"] for d, v in doc["dims"].items()}
        xling[runtime] = {d: v["ndcg@10"] for d, v in doc["cross_lingual"]["languages"]["rev"].items()
                          if d != "n_queries"}
    # a corpus encoded by one runtime does not pass for another's
    vectors = tmp_path / "corpus-torch"
    assert runner.invoke(app, ["encode", "--model", str(out), "--data", str(tiny_beir), "--out", str(vectors),
                               "--runtime", "torch"]).exit_code == 0
    result = runner.invoke(app, ["eval", "--model", str(out), "--data", str(tiny_beir), "--runtime", "onnx",
                                 "--corpus-embeddings", str(vectors)])
    assert result.exit_code != 0 and "encoded with the torch runtime, and these queries with onnx" in " ".join(
        result.output.split()), result.output
    assert scores["torch"].keys() == scores["onnx"].keys() and xling["torch"].keys() == xling["onnx"].keys()
    for d in scores["torch"]:
        assert abs(scores["torch"][d] - scores["onnx"][d]) < 1e-3, (d, scores)
        assert abs(xling["torch"][d] - xling["onnx"][d]) < 1e-3, (d, xling)


def test_a_graph_shape_inference_gives_up_on_gets_no_static_candidate_and_leaves_no_files(
        tiny_model_dir: Path, tiny_beir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime's symbolic shape inference saves its partial graph in the working directory when it
    gives up: the export keeps that out of the user's directory and goes on without a static candidate."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    monkeypatch.setattr(SymbolicShapeInference, "_infer_impl", lambda self, *a, **k: (setattr(self, "run_", False)))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "out"
    code, output = _export(tiny_model_dir, out, "--quantize", "int8", "--calibrate", str(tiny_beir), "--split", "test",
                           "--accept-loss")
    assert code == 0, output
    assert list(work.iterdir()) == []
    candidates = json.loads((out / "mrl.json").read_text())["onnx"]["calibration"]["int8_candidates"]["ndcg@10"]
    assert set(candidates) == {"dynamic", "dynamic, FFN down-projections fp32"}
