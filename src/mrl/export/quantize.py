"""int8 graphs of an exported encoder: dynamic, dynamic with the FFN down-projections in fp32, and static
(activation ranges calibrated on the user's texts), and the choice among them (the smallest worst-prefix
loss of nDCG@10 is kept). Every candidate quantizes its activations, so its products run in int8."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrl._fs import sha256
from mrl.encoders.onnx_runtime import OnnxEncoder

# with calibration data, int8 candidates scored beside the dynamic graph (``onnx-int8``); the one with the smallest
# worst-prefix loss is kept (the first listed on a tie): runtime name -> quantisation
CANDIDATES = {"onnx-int8": "dynamic", "onnx-int8-mixed": "dynamic, FFN down-projections fp32",
              "onnx-int8-static": "static"}
FILES = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_int8.onnx",
         "onnx-int8-mixed": "onnx/model_int8_mixed.onnx", "onnx-int8-static": "onnx/model_int8_static.onnx"}
CALIBRATION_TEXTS = 256  # texts fed through the graph to set static int8 activation ranges


def quantize(folder: Path, data: Any, record: dict[str, Any]) -> None:
    """Dynamic int8 as ``onnx-int8``; with calibration data also the other :data:`CANDIDATES`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = folder / FILES["onnx"]
    # the fused operators (com.microsoft) have no shape inference: their outputs are float
    options = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    with quiet_logger():  # onnxruntime.quantization logs a pre-processing hint on the root logger
        quantize_dynamic(fp32, folder / FILES["onnx-int8"], weight_type=QuantType.QInt8, per_channel=True,
                         extra_options=options)
        if data is not None:
            quantize_dynamic(fp32, folder / FILES["onnx-int8-mixed"], weight_type=QuantType.QInt8, per_channel=True,
                             nodes_to_exclude=down_projections(fp32), extra_options=options)
            quantize_static_int8(folder, data, fp32, folder / FILES["onnx-int8-static"])
    weights = {"precision": "int8", "weights": "int8, one scale per output channel"}
    for runtime, how in CANDIDATES.items():
        if (folder / FILES[runtime]).is_file():
            activations = "uint8, ranges calibrated (min/max)" if how == "static" else "uint8, range per batch"
            record["runtimes"][runtime] = entry(folder, FILES[runtime]) | weights | {
                "quantization": how, "activations": activations}
    if "onnx-int8-static" in record["runtimes"]:
        record["runtimes"]["onnx-int8-static"]["calibration_texts"] = min(
            CALIBRATION_TEXTS, len(data.corpus) + len(data.queries))


def down_projections(path: Path) -> list[str]:
    """MatMuls whose constant weight narrows (``(k, n)``, ``k > n``): a Transformer's FFN output projections,
    whose inputs (after GELU) have the widest ranges; keeping them fp32 spares int8 its largest errors."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and len(shapes.get(n.input[1], ())) == 2
            and shapes[n.input[1]][0] > shapes[n.input[1]][1]]


def keep_better_int8(folder: Path, record: dict[str, Any]) -> str:
    """Keep the int8 candidate whose worst nDCG@10 loss to PyTorch over the prefixes is smallest, as
    ``onnx-int8``; every candidate's scores stay in the record. Returns its quantisation."""
    cal = record["calibration"]
    scores = cal["ndcg@10"]
    candidates = {how: scores.pop(runtime) for runtime, how in CANDIDATES.items() if runtime in scores}
    worst = {how: max(scores["torch"][d] - s[d] for d in s) for how, s in candidates.items()}
    kept = min(worst, key=lambda how: worst[how])  # the first listed on a tie
    for runtime, how in CANDIDATES.items():
        if runtime not in record["runtimes"]:
            continue
        entry = record["runtimes"].pop(runtime)
        if how == kept:
            os.replace(folder / FILES[runtime], folder / FILES["onnx-int8"])
            record["runtimes"]["onnx-int8"] = entry | {"file": FILES["onnx-int8"]}
        elif runtime != "onnx-int8":
            (folder / FILES[runtime]).unlink()
    scores["onnx-int8"] = candidates[kept]
    cal["int8_candidates"] = {"kept": kept, "worst_loss": worst, "ndcg@10": candidates}
    return kept


@contextlib.contextmanager
def quiet_logger(name: str | None = None) -> Iterator[None]:
    """Only errors from logger ``name`` (the root logger by default) while the block runs."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def quantize_static_int8(folder: Path, data: Any, fp32: Path, int8: Path) -> None:
    """Activation ranges from the calibration texts (queries and documents); MatMuls with constant weights only."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from mrl.export.check import sample_texts

    encoder = OnnxEncoder(folder, "onnx", threads=1)
    queries, docs = sample_texts(data, CALIBRATION_TEXTS)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds: Iterator[dict[str, Any]] = iter(
                [feed for kind, texts in (("query", queries), ("document", docs))
                 for _, feed in encoder.batches(texts, kind, 16)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.feeds, None)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    # the fused operators' outputs need their types (symbolic shape inference knows onnxruntime's own
    # operators): without them the quantizer finds no activation to quantize and stores int8 weights only,
    # which computes in fp32 (slower than the fp32 graph)
    typed = int8.with_name("typed.onnx")
    # symbolic shape inference that gives up saves its partial graph in the working directory: keep it out
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            quant_pre_process(str(fp32.resolve()), str(typed.resolve()), skip_optimization=True, auto_merge=True)
        except Exception:  # (it gave up on this graph) no static candidate
            typed.unlink(missing_ok=True)
            return
        finally:
            os.chdir(cwd)
    quantize_static(typed, int8, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax, extra_options={"MatMulConstBOnly": True})
    typed.unlink()
    if not computes_int8(int8):  # not an int8 graph: no candidate
        int8.unlink()


def computes_int8(path: Path) -> bool:
    """Whether a graph quantizes activations (so its matrix products run in int8), rather than only storing
    int8 weights that are dequantized to fp32."""
    import onnx

    quantizers = {"QuantizeLinear", "DynamicQuantizeLinear", "QAttention", "DynamicQuantizeMatMul"}
    return any(n.op_type in quantizers for n in onnx.load(str(path), load_external_data=False).graph.node)


def entry(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    return {"file": name, "sha256": sha256(path), "bytes": path.stat().st_size}
