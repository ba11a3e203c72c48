"""The bodies of the service's own routes (``/predict``, ``/model``, the probes), as pydantic models.

Request models validate (``model_validate``) in the routes; response models are
never built at run time (the routes write plain dicts, on the hot path of
``/predict``): they document the bodies, and the tests check real responses
against them through the OpenAPI document. Examples are real answers of the
service with the committed model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.api.schemas.common import ModelRef, examples
from service.model_config import LABEL_PATTERN, NAME_PATTERN


class PredictRequest(BaseModel):
    """``{"text": "..."}`` or ``{"texts": ["...", ...]}``; strict: no type coercion, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True)
    text: str | None = Field(None, description="One text (1 to SENTIMENT_MAX_TEXT_CHARS characters, not blank, no NUL).")
    texts: list[str] | None = Field(None, description="1 to SENTIMENT_MAX_TEXTS_PER_REQUEST texts, answered in this order.")
    explain: bool = Field(False, description="Also say which words drove each score (`explanation` in each prediction).")
    model: str | None = Field(None, pattern=NAME_PATTERN, description="A served model (`GET /model` lists them); unset: the default.")
    version: int | None = Field(None, ge=1, description="A served version of the model; unset: the model's default (or its canary).")
    label: str | None = Field(None, pattern=LABEL_PATTERN, description='A label of the model config (e.g. "stable"): its version.')

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError('give exactly one of "text" (a string) or "texts" (a list of strings)')
        if self.version is not None and self.label is not None:
            raise ValueError('give a "version" or a "label", not both')
        return self


class TokenWeight(BaseModel):
    token: str = Field(description="The token as the model reads it (lower-cased, apostrophes dropped).")
    start: int = Field(ge=0, description="Offset of its first character in the text as sent (Unicode code points).")
    end: int = Field(ge=1, description="Offset just past its last character: text[start:end] is the word to highlight.")
    weight: float | None = Field(
        description="How much the token moves the logit (its word vector's gradient × input): positive pushes toward "
        "positive, negative toward negative; null if it was not read."
    )
    read: bool = Field(description="False for a token in the middle of a text too long to read whole.")


class Explanation(BaseModel):
    """Which words drove the score: a weight per token, on the scale of the logit (log-odds of positive)."""

    method: Literal["gradient_x_input"] = Field(
        description="Gradient × input of each token's word vector, through the served network (README, Explanations)."
    )
    logit: float = Field(description="The log-odds of positive the weights explain (a text read in windows: their mean).")
    tokens: list[TokenWeight] = Field(description="Every token of the text, in text order.")


class Prediction(BaseModel):
    label: str = Field(
        description='A two-label model: "positive" when score >= its decision threshold (0.5), else "negative". '
        "A model of more labels (e.g. negative, neutral, positive): the likeliest one."
    )
    score: float = Field(
        ge=0, le=1, description="A two-label model: P(positive), as always. More labels: the probability of `label`. 6 decimals."
    )
    scores: dict[str, float] = Field(description="Every label of the model and its probability (they sum to 1), 6 decimals.")
    truncated: bool = Field(description="The text was longer than the model's token limit and lost its middle.")
    tokens: int = Field(ge=1, description="Length of the text in tokens, before truncation.")
    windows: int = Field(
        1,
        ge=1,
        description="Windows of the model's input the text was read in (more than 1 for a long text, "
        "when the served version reads long texts in windows).",
    )
    explanation: Explanation | None = Field(None, description='Only when the request said "explain": true.')


class PredictResponse(BaseModel):
    model_config = examples(
        {
            "predictions": [
                {
                    "label": "positive",
                    "score": 0.981054,
                    "truncated": False,
                    "tokens": 5,
                    "windows": 1,
                    "scores": {"negative": 0.018946, "positive": 0.981054},
                },
                {
                    "label": "negative",
                    "score": 0.010182,
                    "truncated": False,
                    "tokens": 6,
                    "windows": 1,
                    "scores": {"negative": 0.989818, "positive": 0.010182},
                },
            ],
            "model": {"name": "sentiment", "version": 3},
            "request_id": "a1049b79da4e49ccbd54c147077e026a",
        }
    )
    predictions: list[Prediction] = Field(description="One per text, in input order.")
    model: ModelRef
    request_id: str = Field(description="The X-Request-ID of the request (generated when the client sent none).")


class HealthResponse(BaseModel):
    model_config = examples({"status": "ok"})
    status: Literal["ok"]


class ReadyChecks(BaseModel):
    vocabulary: bool = Field(description="The tokenizer's vocabulary is loaded.")
    redis: bool = Field(description="Redis answers.")
    workers: int = Field(ge=0, description="Live inference workers serving this model version.")
    backlog: int | None = Field(None, ge=0, description="Requests waiting in the queue (when Redis answers).")


class ReadyResponse(BaseModel):
    model_config = examples(
        {
            "status": "ready",
            "model": {"name": "sentiment", "version": 3},
            "checks": {"vocabulary": True, "redis": True, "workers": 1, "backlog": 0},
        },
        {
            "status": "not ready",
            "model": {"name": "sentiment", "version": 3},
            "checks": {"vocabulary": True, "redis": True, "workers": 0, "backlog": 0},
            "reasons": ["no live inference worker has sentiment v3 loaded"],
        },
    )
    status: Literal["ready", "not ready"]
    model: ModelRef
    checks: ReadyChecks
    reasons: list[str] | None = Field(None, description="Why it is not ready (only when it is not).")


class Limits(BaseModel):
    max_texts_per_request: int
    max_text_chars: int
    max_body_bytes: int
    default_deadline_ms: int


class VersionState(BaseModel):
    version: int
    state: Literal["AVAILABLE", "LOADING", "UNLOADING"] = Field(
        description="AVAILABLE: served by a live worker; LOADING: configured, no worker yet (requests naming it get 503); "
        "UNLOADING: no longer configured, its queued requests still being answered."
    )
    labels: list[str] = Field(description="The config's labels that name this version.")


class TrafficShare(BaseModel):
    version: int
    percent: float = Field(ge=0, le=100, description="Share of the model's default traffic.")


class ModelInfoResponse(BaseModel):
    model_config = examples(
        {
            "name": "sentiment",
            "version": 3,
            "limits": {"max_texts_per_request": 64, "max_text_chars": 50000, "max_body_bytes": 1048576, "default_deadline_ms": 2000},
            "metadata": {"name": "sentiment", "version": 3, "label_names": ["negative", "positive"], "decision_threshold": 0.5},
            "versions": [
                {"version": 2, "state": "AVAILABLE", "labels": ["canary"]},
                {"version": 3, "state": "AVAILABLE", "labels": ["stable"]},
            ],
            "canary": {"version": 2, "percent": 10.0},
            "shadow": None,
            "models": ["sentiment"],
        }
    )
    name: str
    version: int = Field(description="The default version: what a request that names no version or label gets (but the canary's share).")
    limits: Limits
    metadata: dict[str, Any] = Field(description="The default version's metadata.json: data set, metrics, hyper-parameters, signatures.")
    versions: list[VersionState] = Field(description="Every version served, loading or unloading, ascending.")
    canary: TrafficShare | None = Field(description="The version that takes a share of default traffic, if any.")
    shadow: TrafficShare | None = Field(description="The version default traffic is mirrored to (answers only compared), if any.")
    models: list[str] = Field(description="Every model this server serves (`GET /model?model=<name>` for another).")
