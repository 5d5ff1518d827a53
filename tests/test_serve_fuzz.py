"""schemathesis against the service's own OpenAPI schema: generated requests (valid and invalid)
never get a 5xx, and every error comes back in the ``{"error": {"message", "type"}}`` shape."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from mrl.data.beir import load_corpus
from mrl.encoders.model import encode, load_model
from mrl.index import MrlIndex
from mrl.serve import ServeSettings, create_app


@pytest.fixture(scope="module")
def api_schema(tiny_model_dir, tiny_beir, tmp_path_factory):
    corpus = load_corpus(tiny_beir)
    xb = encode(load_model(str(tiny_model_dir)), list(corpus.values()))
    path = tmp_path_factory.mktemp("fuzz") / "idx"
    MrlIndex.build(path, xb, list(corpus), model=str(tiny_model_dir), first_stages=["int8@16", "hnsw@32"])
    app = create_app(ServeSettings(path, max_batch=16, max_k=50, max_candidates=5000))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_request_gets_a_server_error(api_schema, mode):
    """Every operation of the schema, with schema-valid (positive) and schema-violating (negative) data.

    (schemathesis' ``pytest.from_fixture`` does not run under pytest 9, so each operation's
    strategy is driven by hypothesis here.)
    """
    operations = _operations(api_schema)
    assert {op.label for op in operations} >= {"POST /search", "POST /v1/embeddings", "GET /healthz", "GET /stats"}
    seen = {}
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = case.call()
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case.operation.label, response.status_code, response.text[:300])
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["message"] and error["type"], response.text

        try:
            check()
        except Unsatisfiable:  # nothing to make invalid: GET routes without parameters
            assert mode == "negative" and operation.method.upper() == "GET", operation.label
    assert mode == "positive" or any(400 <= status < 500 for status in seen), seen
