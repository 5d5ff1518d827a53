"""Request and response bodies (pydantic), one module for the whole API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _valid_text(value: str | list[str] | None) -> str | list[str] | None:
    """Text must be valid Unicode: JSON's escapes can carry a lone surrogate (\\ud800) no encoder takes."""
    for i, text in enumerate([value] if isinstance(value, str) else value or []):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            where = f"text {i}" if isinstance(value, list) else "the text"
            raise ValueError(f"{where} holds a lone surrogate (U+{ord(text[e.start]):04X}) at position {e.start}; "
                             "it is not valid Unicode") from None
    return value


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str | list[str] | None = Field(None, description="Text query or queries (needs a model).")
    vector: list[float] | list[list[float]] | None = Field(None, description="Query vector(s) of the index's dim.")
    k: int = Field(10, ge=1, strict=True, description="Results per query.")
    cascade: str | None = Field(None, description="Override the default cascade, e.g. int8@64:1000,384:10.")
    stats: bool = Field(False, strict=True, description="Also return the work of the search (candidates "
                                                        "rescored, bytes read; per query, per stage, mean).")
    filter: dict[str, Any] | None = Field(None, description="A payload filter: {\"must\": [...], \"must_not\": "
                                          "[...], \"should\": [...]} of {\"key\", \"match\"} or {\"key\", "
                                          "\"range\"} conditions (see README, Filters).")

    _text = field_validator("query")(_valid_text)


class Hit(BaseModel):
    id: str
    score: float


class StageWork(BaseModel):
    stage: str
    dim: int
    first: bool
    counted: bool
    mean_candidates: float
    mean_bytes: float


class QueryWork(BaseModel):
    candidates_rescored: int
    bytes_read: float


class SearchWork(BaseModel):
    queries: int
    mean_candidates_rescored: float
    mean_bytes_read: float
    per_stage: list[StageWork]
    per_query: list[QueryWork]


class SearchResponse(BaseModel):
    results: list[list[Hit]]
    cascade: str
    took_ms: float
    work: SearchWork | None = None


class EmbeddingRequest(BaseModel):
    """The OpenAI embeddings request (``input`` as text; token arrays are not supported)."""

    input: str | list[str]
    model: str | None = Field(None, max_length=256)
    dimensions: int | None = Field(None, ge=1, strict=True)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    input_type: Literal["query", "document"] = Field(
        "query", description="How the texts are encoded: as queries (the default) or as documents (a model with "
                             "prompts, such as multilingual-e5-small, prefixes them differently).")

    _text = field_validator("input", "model", "user")(_valid_text)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class UpsertRequest(BaseModel):
    """New ids are added, existing ones replaced; all or nothing."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str | int] = Field(min_length=1, description="One id per vector or text (the index's id kind).")
    vectors: list[list[float]] | None = Field(None, description="Vectors of the index's dimension.")
    texts: list[str] | None = Field(None, description="Documents, encoded with the index's model.")
    payloads: list[dict[str, Any] | None] | None = Field(
        None, description="A JSON object (or null) per id, stored with the row for filtered search; it replaces "
                          "the payload of an id that exists (none given: the row has none).")

    _text = field_validator("texts")(_valid_text)


class DeleteRequest(BaseModel):
    """Every id must exist; all or nothing."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str | int] = Field(min_length=1)


class WriteResponse(BaseModel):
    count: int = Field(description="Live vectors after the change.")
    generation: int = Field(description="The snapshot that holds the change: every later search sees it.")
    changed: int = Field(description="Ids upserted or deleted.")
