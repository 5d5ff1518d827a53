"""The HTTP service: TestClient for the routes and errors, a real uvicorn server for the openai client."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mrl.data.beir import load_corpus
from mrl.encoders.model import encode, load_model
from mrl.errors import MrlError
from mrl.index import MrlIndex
from mrl.serve import ServeSettings, create_app

KEY = "sekret"


@pytest.fixture(scope="module")
def served(tiny_model_dir, tiny_beir, tmp_path_factory):
    corpus = load_corpus(tiny_beir)
    model = load_model(str(tiny_model_dir))
    xb = encode(model, list(corpus.values()))
    path = tmp_path_factory.mktemp("serve") / "idx"
    MrlIndex.build(path, xb, list(corpus), model=str(tiny_model_dir), first_stages=["int8@16"])
    return path, model, corpus


@pytest.fixture()
def client(served):
    path, _, _ = served
    return TestClient(create_app(ServeSettings(path, api_key=KEY, max_body_bytes=20_000, max_batch=8)),
                      headers={"Authorization": f"Bearer {KEY}"})


def test_search_by_text_and_by_vector_agree_with_the_library(client, served):
    path, model, corpus = served
    text = next(iter(corpus.values()))
    r = client.post("/search", json={"query": text, "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cascade"] == "int8@16:100,64:10" and len(body["results"][0]) == 3
    assert body["results"][0][0]["id"] == next(iter(corpus))  # a document finds itself
    xq = encode(model, [text])
    scores, ids = MrlIndex.open(path).search(xq, 3)
    r = client.post("/search", json={"vector": xq[0].tolist(), "k": 3, "cascade": "int8@16:50,64:3"})
    hits = r.json()["results"][0]
    assert [h["id"] for h in hits] == MrlIndex.open(path).keys(ids)[0]
    np.testing.assert_allclose([h["score"] for h in hits], scores[0], atol=1e-5)


def test_embeddings_truncate_and_renormalise(client, served):
    _, model, _ = served
    texts = ["a small test", "another text"]
    full = encode(model, texts)
    r = client.post("/v1/embeddings", json={"input": texts, "model": "tiny", "dimensions": 16})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "tiny" and body["usage"]["prompt_tokens"] > 0
    got = np.array([d["embedding"] for d in body["data"]])
    want = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-5)
    r = client.post("/v1/embeddings", json={"input": texts[0], "encoding_format": "base64"})
    vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, full[0] / np.linalg.norm(full[0]), atol=1e-5)


@pytest.mark.parametrize("route,payload,status,message", [
    ("/search", {"query": "x", "vector": [0.0], "k": 3}, 422, "exactly one of"),
    ("/search", {"query": "x", "k": 0}, 422, "greater than or equal to 1"),
    ("/search", {"vector": [0.1] * 10, "k": 3}, 400, "dimension 10 does not match the index's dimension 64"),
    ("/search", {"vector": [0.1] * 64, "k": 3, "cascade": "64:10,32:5"}, 400, "dimensions must increase"),
    ("/search", {"vector": [0.1] * 64, "k": 10_000}, 422, "exceeds this service's limit"),
    ("/search", {"query": ["q"] * 9}, 413, "exceed this service's limit of 8"),
    ("/search", {"query": "x", "bogus": 1}, 422, "bogus"),
    ("/search", {"vector": [[0.1] * 64, [0.1] * 63], "k": 3}, 400, "different lengths"),
    ("/v1/embeddings", {"input": "x", "dimensions": 65}, 400, "exceeds the model's dimension 64"),
    ("/v1/embeddings", {"input": "x", "dimensions": 0}, 422, "greater than or equal to 1"),
    ("/v1/embeddings", {"input": [1, 2, 3]}, 422, "input"),
    ("/search", {"query": "a\ud800b"}, 422, "lone surrogate (U+D800) at position 1"),
    ("/v1/embeddings", {"input": ["ok", "\udfff"]}, 422, "text 1 holds a lone surrogate (U+DFFF)"),
    ("/search", {"query": "x", "k": True}, 422, "k: Input should be a valid integer"),
    ("/search", {"query": "x", "k": "10"}, 422, "k: Input should be a valid integer"),
    ("/search", {"vector": [float("inf")] * 64}, 400, "row 0 holds NaN or Inf"),  # really infinite (1e39: valid)
])
def test_bad_requests_get_clear_4xx(client, route, payload, status, message):
    r = client.post(route, content=json.dumps(payload), headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]  # every error has the README's shape


def test_work_per_request_is_bounded(served):
    """A shortlist beyond the corpus is clamped; queries x shortlist above max_candidates get a 422 naming it."""
    path, model, corpus = served
    client = TestClient(create_app(ServeSettings(path, max_candidates=2 * len(corpus))))
    vec = encode(model, ["a query"])[0].tolist()
    want = client.post("/search", json={"vector": vec, "k": 5, "cascade": f"int8@16:{len(corpus)},64:5"}).json()
    for huge in (10_000_000, 10**12):
        r = client.post("/search", json={"vector": vec, "k": 5, "cascade": f"int8@16:{huge},64:5"})
        assert r.status_code == 200 and r.json()["results"] == want["results"]
    r = client.post("/search", json={"vector": [vec] * 3, "k": 5, "cascade": "int8@16:10000000,64:5"})
    assert r.status_code == 422 and "max_candidates" in r.json()["error"]["message"]
    assert client.post("/search", json={"vector": [vec] * 2, "k": 5, "cascade": "int8@16:10000000,64:5"}).is_success


def test_a_nan_vector_is_rejected(client):
    body = '{"vector": [' + ", ".join(["0.1"] * 63 + ["NaN"]) + '], "k": 3}'  # json.dumps refuses NaN
    r = client.post("/search", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "NaN or Inf" in r.text


def test_api_key_body_limit_health_and_stats(client, served):
    path, _, _ = served
    anon = TestClient(client.app)
    assert anon.get("/healthz").json()["status"] == "ok"  # health stays open
    r = anon.post("/search", json={"query": "x"})
    assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    assert anon.get("/stats", headers={"X-API-Key": "wrong"}).status_code == 401
    assert anon.get("/stats", headers={"X-API-Key": KEY}).status_code == 200
    r = client.post("/search", json={"vector": [0.1] * 5000, "k": 3})
    assert r.status_code == 413 and "exceeds 20000 bytes" in r.text
    stats = client.get("/stats").json()
    assert stats["index"]["count"] == MrlIndex.open(path).count and stats["requests"]["stats"] >= 1


def test_the_service_sees_changes_committed_by_another_writer(served, tiny_model_dir, tmp_path):
    path, model, corpus = served
    model_path = tiny_model_dir
    xb = encode(model, list(corpus.values())[:20])
    idx = MrlIndex.build(tmp_path / "i", xb, [f"d{i}" for i in range(20)], first_stages=["int8@16"])
    client = TestClient(create_app(ServeSettings(tmp_path / "i", model=str(model_path), preload=True)))
    assert client.app.state.mrl._model is not None  # loaded at start-up, not by the first request
    assert client.get("/healthz").json()["count"] == 20
    idx.delete(["d3"])
    time.sleep(0.01)
    assert client.get("/healthz").json()["count"] == 19


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_client_against_a_real_uvicorn_server(served):
    import openai
    import uvicorn

    path, model, _ = served
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ServeSettings(path, api_key=KEY)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        assert server.started
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
        res = client.embeddings.create(model="tiny", input=["hello world", "apt package"], dimensions=32)
        got = np.array([d.embedding for d in res.data])
        full = encode(model, ["hello world", "apt package"])[:, :32]
        np.testing.assert_allclose(got, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-5)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="bad", max_retries=0).embeddings.create(
                model="tiny", input="x")
        with pytest.raises(openai.BadRequestError, match="exceeds the model's dimension"):
            client.embeddings.create(model="tiny", input="x", dimensions=1000)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.parametrize("damage", ["garbage", "edited", "removed"])
def test_a_damaged_manifest_keeps_the_last_good_snapshot_serving(damage, served, tmp_path):
    path, model, corpus = served
    xb = encode(model, list(corpus.values())[:20])
    idx = MrlIndex.build(tmp_path / "i", xb, [f"d{i}" for i in range(20)], first_stages=["int8@16"])
    client = TestClient(create_app(ServeSettings(tmp_path / "i")))
    idx = idx.delete(["d3"])  # the service moves to generation 2 ...
    assert client.get("/healthz").json() == {"status": "ok", "count": 19, "generation": 2, "problem": None}
    good = client.post("/search", json={"vector": xb[0].tolist(), "k": 3}).json()["results"]
    manifest = tmp_path / "i" / "manifest.json"
    saved = manifest.read_bytes()
    if damage == "garbage":  # ... then the newest manifest goes bad under it
        manifest.write_text('{"format": "mrl-index", "vers')
    elif damage == "edited":
        manifest.write_text(manifest.read_text().replace('"count": 19', '"count": 25'))
    else:
        manifest.unlink()
    health = client.get("/healthz").json()
    assert health["status"] == "degraded" and health["count"] == 19 and health["generation"] == 2, health
    assert health["problem"].startswith("serving generation 2: ")
    r = client.post("/search", json={"vector": xb[0].tolist(), "k": 3})
    assert r.status_code == 200 and r.json()["results"] == good
    assert client.get("/stats").json()["snapshot"]["stale"] is True
    with pytest.raises(MrlError):
        idx.add(xb[3:4], ["d3"])  # writers refuse it too
    time.sleep(0.01)
    manifest.write_bytes(saved)  # repaired: the service serves the newest manifest again
    assert client.get("/healthz").json()["status"] == "ok"


def test_concurrent_text_requests_get_the_serial_answers(client, served):
    """Requests run in a thread pool; the tokenizer is not thread-safe (this raised 500s under load)."""
    from concurrent.futures import ThreadPoolExecutor

    _, model, corpus = served
    texts = [t[: 20 + 37 * i % 400] for i, t in enumerate(list(corpus.values())[:24])]  # varied lengths
    want = encode(model, texts)
    want /= np.linalg.norm(want, axis=1, keepdims=True)

    def one(i: int) -> tuple[int, np.ndarray | None]:
        r = client.post("/v1/embeddings", json={"input": texts[i : i + 2], "encoding_format": "float"})
        return r.status_code, np.array([d["embedding"] for d in r.json()["data"]]) if r.is_success else None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, [i % 23 for i in range(96)]))
    assert [status for status, _ in results] == [200] * 96
    for i, (_, got) in zip([i % 23 for i in range(96)], results):
        np.testing.assert_allclose(got, want[i : i + 2], atol=1e-5)


def test_a_short_loopback_load_with_a_committing_writer_has_no_errors(served, tmp_path):
    """The fast part of benchmarks/serve_load.py: concurrent clients over real HTTP while adds commit."""
    import asyncio
    import importlib.util
    from pathlib import Path

    import uvicorn

    spec = importlib.util.spec_from_file_location(
        "serve_load", Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py")
    serve_load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve_load)
    _, model, corpus = served
    texts = list(corpus.values())[:40]
    xb = encode(model, list(corpus.values()))
    idx = MrlIndex.build(tmp_path / "i", xb, list(corpus), model=MrlIndex.open(served[0]).manifest.model,
                         first_stages=["int8@16"])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ServeSettings(tmp_path / "i")), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    stop = threading.Event()

    def writer() -> None:
        step = 0
        while not stop.wait(0.3):
            MrlIndex.open(tmp_path / "i").add(xb[:5] + 0.01 * (step + 1), [f"w{step}-{i}" for i in range(5)])
            step += 1

    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        thread = threading.Thread(target=writer)
        thread.start()
        result = asyncio.run(serve_load.load(f"http://127.0.0.1:{port}", xb[:20], texts, clients=16, duration=4))
        stop.set()
        thread.join()
    finally:
        stop.set()
        server.should_exit = True
    assert result["requests"] > 50 and result["errors"] == 0, (result["error_examples"], result)
    assert set(result["routes"]) == {"search_vector", "search_text", "embeddings"}
    assert MrlIndex.open(tmp_path / "i").manifest.generation > idx.manifest.generation + 3


def test_settings_from_env_sit_under_the_values_given():
    env = {"MRL_INDEX": "idx", "MRL_MAX_BATCH": "8", "MRL_MAX_K": "50", "MRL_API_KEY": ""}  # empty: not set
    settings = ServeSettings.from_env(env, max_k=20, model=None)
    assert (settings.index, settings.max_batch, settings.max_k, settings.api_key, settings.model) == (
        "idx", 8, 20, None, None)
    assert settings.max_candidates == ServeSettings("x").max_candidates  # neither: the default
    for bad in ("0", "-3", "lots"):
        with pytest.raises(MrlError, match=f"MRL_MAX_BATCH='{bad}': expected a positive integer"):
            ServeSettings.from_env({**env, "MRL_MAX_BATCH": bad})
    with pytest.raises(MrlError, match="no index: pass one or set MRL_INDEX"):
        ServeSettings.from_env({})


def test_mrl_serve_reads_options_then_mrl_variables(served, monkeypatch):
    import uvicorn
    from test_cli import _run

    path, _, _ = served
    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    for var, value in (("MRL_INDEX", str(path)), ("MRL_MAX_BATCH", "8"), ("MRL_MAX_K", "50"), ("MRL_API_KEY", KEY)):
        monkeypatch.setenv(var, value)
    code, out = _run("serve", "--max-k", "20", "--port", "8123")
    assert code == 0, out
    settings = seen["app"].state.mrl.settings
    assert (settings.index, settings.max_batch, settings.max_k, settings.api_key, settings.preload) == (
        str(path), 8, 20, KEY, True)
    assert seen["port"] == 8123 and "(API key required)" in out
    monkeypatch.setenv("MRL_MAX_BATCH", "lots")
    code, out = _run("serve")
    assert code == 2 and "MRL_MAX_BATCH='lots': expected a positive integer" in out


def test_the_whole_work_of_a_request_is_bounded(served):
    """Every rescoring stage counts (queries x candidates x prefix), and a cascade has at most 8 stages."""
    path, model, corpus = served
    client = TestClient(create_app(ServeSettings(path, max_work=20 * len(corpus) * 64)))
    vec = encode(model, ["a query"])[0].tolist()
    amplifier = ",".join(f"{d}:{len(corpus)}" for d in range(1, 65))  # one stage per dimension
    r = client.post("/search", json={"vector": vec, "k": 5, "cascade": amplifier})
    assert r.status_code == 422 and "64 stages, more than the 8" in r.json()["error"]["message"]
    heavy = f"int8@16:{len(corpus)},32:{len(corpus)},48:{len(corpus)},64:5"  # 16 + 32 + 48 + 64 dims per candidate
    r = client.post("/search", json={"vector": [vec] * 9, "k": 5, "cascade": heavy})
    assert r.status_code == 422 and "max_work" in r.json()["error"]["message"]
    assert client.post("/search", json={"vector": [vec] * 2, "k": 5, "cascade": heavy}).is_success
    assert client.get("/stats").json()["limits"]["max_work"] == 20 * len(corpus) * 64


def test_a_request_abandoned_or_out_of_time_is_not_encoded():
    import anyio

    from mrl.serve.errors import ApiError
    from mrl.serve.state import Liveness, TextEncoder

    calls = []

    class Recorder:  # an encoder that records what it is asked to encode
        dim = 4

        def encode(self, texts, kind="document", batch_size=32):
            calls.append(list(texts))
            return np.zeros((len(texts), 4), np.float32)

    encoder = TextEncoder("unused")
    encoder._encoder = Recorder()  # opened

    class Gone:
        async def is_disconnected(self) -> bool:
            return True

    async def in_a_worker(alive):
        return await anyio.to_thread.run_sync(lambda: encoder.encode(["text"], alive))

    with pytest.raises(ApiError, match="closed the connection"):
        anyio.run(in_a_worker, Liveness(Gone(), 60))
    with pytest.raises(ApiError, match="max_seconds"):
        anyio.run(in_a_worker, Liveness(None, -1))
    assert calls == []
    anyio.run(in_a_worker, Liveness(None, 60))
    assert calls == [["text"]]


def test_vectors_beyond_float32_keep_their_direction(served):
    path, model, corpus = served
    client = TestClient(create_app(ServeSettings(path)))
    vec = encode(model, ["a query"])[0].astype(np.float64)
    want = client.post("/search", json={"vector": vec.tolist(), "k": 5}).json()["results"]
    got = client.post("/search", json={"vector": (vec * 1e300).tolist(), "k": 5})
    assert got.status_code == 200, got.text
    assert [h["id"] for h in got.json()["results"][0]] == [h["id"] for h in want[0]]


def test_a_rebuild_with_another_model_reloads_the_encoder_or_keeps_the_last_good_snapshot(
        tiny_model_dir, tiny_beir, tmp_path):
    from conftest import build_tiny_model

    corpus = load_corpus(tiny_beir)
    texts, ids = list(corpus.values()), list(corpus)
    other = build_tiny_model(tmp_path / "m32", hidden=32, corpus=texts)
    first = encode(load_model(str(tiny_model_dir)), texts)
    second = encode(load_model(str(other)), texts)
    for explicit in (False, True):
        path = tmp_path / f"idx-{explicit}"
        MrlIndex.build(path, first, ids, model=str(tiny_model_dir), first_stages=["int8@16"])
        client = TestClient(create_app(ServeSettings(path, model=str(tiny_model_dir) if explicit else None)))
        assert client.post("/search", json={"query": texts[0], "k": 1}).json()["results"][0][0]["id"] == ids[0]
        MrlIndex.build(path, second, ids, model=str(other), first_stages=["int8@16"], overwrite=True)
        health = client.get("/healthz").json()
        r = client.post("/search", json={"query": texts[0], "k": 1})
        assert r.status_code == 200 and r.json()["results"][0][0]["id"] == ids[0], r.text
        if explicit:  # the service's own model gives 64 dims: the 32-dim rebuild is not served, and it says why
            assert health["status"] == "degraded" and "dimension 32" in health["problem"] and health["generation"] == 1
        else:  # the index's model changed: the encoder follows it
            assert health["status"] == "ok" and health["generation"] == 2
            assert client.get("/stats").json()["model"] == str(other)


def test_with_a_key_only_healthz_is_open_and_an_empty_key_is_refused(served):
    from mrl.errors import MrlError

    path, _, _ = served
    client = TestClient(create_app(ServeSettings(path, api_key=KEY)))
    assert client.get("/healthz").status_code == 200
    for route in ("/openapi.json", "/stats"):
        assert client.get(route).status_code == 401
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    schema = client.get("/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    assert schema.status_code == 200 and "/search" in schema.json()["paths"]
    with pytest.raises(MrlError, match="--api-key is empty"):
        ServeSettings(path, api_key="")


def test_an_unvalidated_model_name_is_refused_not_echoed(client):
    r = client.post("/v1/embeddings", content='{"input": "a", "model": "\\ud800"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("model:")
    assert client.post("/v1/embeddings", json={"input": "a", "model": "m" * 300}).status_code == 422


def test_a_body_that_stops_arriving_gets_408(served):
    """A Content-Length larger than the body sent: the connection is answered, not held forever."""
    import uvicorn

    path, _, _ = served
    app = create_app(ServeSettings(path, read_timeout_s=0.5))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started:
                break
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"k\": 3")
            reply = b""
            while b"stopped arriving" not in reply:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                reply += chunk
            reply = reply.decode()
        assert reply.startswith("HTTP/1.1 408") and "stopped arriving" in reply
    finally:
        server.should_exit = True
        thread.join(timeout=10)
