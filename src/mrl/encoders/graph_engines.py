"""What runs an exported graph: onnxruntime, or OpenVINO (Intel's CPU runtime, behind ``mrl[openvino]``).

Both take the graph :mod:`mrl.export.onnx` wrote (tokens in, the normalised embedding out) and return a
function from the padded inputs to the ``(b, d)`` embeddings; neither imports torch. OpenVINO reads
the fp32 graph, onnxruntime's fused operators included, and on a CPU with bfloat16 units (AMX or
AVX-512 BF16) computes in bfloat16 by default: on this project's machine 1.7-1.9x the throughput of
onnxruntime's int8 graph, within 0.001 nDCG@10 of PyTorch at every prefix (docs/benchmarks.md, "An
OpenVINO runtime").
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from mrl.errors import MrlError

ONNX_HINT = "pip install 'mrl[onnx]' (onnxruntime, onnx and onnxscript)"
OPENVINO_HINT = "pip install 'mrl[openvino]'"


@dataclass(frozen=True)
class GraphEngine:
    """``run(feed) -> (b, d)`` embeddings; the precision it computes in and the threads it was given,
    both as the runtime reports them."""

    run: Callable[[dict[str, np.ndarray]], np.ndarray]
    precision: str
    threads: int  # 0: the runtime's default (every core)


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MrlError(f"the ONNX runtime needs onnxruntime: {ONNX_HINT}") from None
    return onnxruntime


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise MrlError(f"the openvino runtime needs OpenVINO: {OPENVINO_HINT}") from None
    return openvino


def openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


@cache
def openvino_computes_bf16() -> bool:
    """Whether OpenVINO is installed and this CPU has bfloat16 units, where OpenVINO computes in
    bfloat16 and is the fastest runtime (``auto`` then prefers it)."""
    try:
        import openvino
    except ImportError:
        return False
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def onnxruntime_engine(path: Path, threads: int | None, spin: bool) -> GraphEngine:
    """An onnxruntime session (``spin``: whether idle pool threads spin between runs; ``False`` leaves
    the cores to the rest of a process)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return GraphEngine(lambda feed: session.run(None, feed)[0], "as exported",
                       session.get_session_options().intra_op_num_threads)


def openvino_engine(path: Path, threads: int | None) -> GraphEngine:
    """The graph compiled by OpenVINO for the CPU (one stream, latency first; its default precision,
    bfloat16 where the CPU has it). Thread-safe: an inference request per thread."""
    ov = import_openvino()
    core = ov.Core()
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    except RuntimeError as e:
        raise MrlError(f"{path}: OpenVINO cannot compile this graph ({str(e).strip().splitlines()[-1]}); "
                       "use --runtime onnx") from None
    output = compiled.output(0)
    local = threading.local()

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(local, "request", None)
        if request is None:
            request = local.request = compiled.create_infer_request()
        return np.array(request.infer(feed)[output], dtype=np.float32)  # a copy: the request reuses its buffer

    return GraphEngine(run, compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
                       int(compiled.get_property("INFERENCE_NUM_THREADS")) if threads else 0)
