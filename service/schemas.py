"""Every JSON body the HTTP API takes or gives, as pydantic models: what validates requests and what ``/openapi.json`` shows.

Request models validate (``model_validate``) in the routes; response models are
never built at run time (the routes write plain dicts, on the hot path of
``/predict``): they document the bodies, and the tests check real responses
against them through the OpenAPI document. Examples are real answers of the
service with the committed model.

Three groups, one per protocol: the service's own (``/predict``, ``/model``,
probes), TensorFlow Serving's REST API (``/v1/...``) and KServe's Open
Inference Protocol v2 (``/v2/...``). The two standard protocols answer errors
as ``{"error": "..."}``, as their servers do; the service's own routes as
``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator


def _examples(*examples: Any) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


# --- the service's own API ------------------------------------------------------------------


class PredictRequest(BaseModel):
    """``{"text": "..."}`` or ``{"texts": ["...", ...]}``; strict: no type coercion, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True)
    text: str | None = Field(None, description="One text (1 to SENTIMENT_MAX_TEXT_CHARS characters, not blank, no NUL).")
    texts: list[str] | None = Field(None, description="1 to SENTIMENT_MAX_TEXTS_PER_REQUEST texts, answered in this order.")
    explain: bool = Field(False, description="Also say which words drove each score (`explanation` in each prediction).")

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError('give exactly one of "text" (a string) or "texts" (a list of strings)')
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
    label: str = Field(description='"positive" when score >= the model\'s decision threshold (0.5), else "negative".')
    score: float = Field(ge=0, le=1, description="P(positive), rounded to 6 decimals.")
    truncated: bool = Field(description="The text was longer than the model's token limit and lost its middle.")
    tokens: int = Field(ge=1, description="Length of the text in tokens, before truncation.")
    windows: int = Field(
        1,
        ge=1,
        description="Windows of the model's input the text was read in (more than 1 for a long text, "
        "when the served version reads long texts in windows).",
    )
    explanation: Explanation | None = Field(None, description='Only when the request said "explain": true.')


class ModelRef(BaseModel):
    name: str
    version: int


class PredictResponse(BaseModel):
    model_config = _examples(
        {
            "predictions": [
                {"label": "positive", "score": 0.981054, "truncated": False, "tokens": 5, "windows": 1},
                {"label": "negative", "score": 0.010182, "truncated": False, "tokens": 6, "windows": 1},
            ],
            "model": {"name": "sentiment", "version": 3},
            "request_id": "a1049b79da4e49ccbd54c147077e026a",
        }
    )
    predictions: list[Prediction] = Field(description="One per text, in input order.")
    model: ModelRef
    request_id: str = Field(description="The X-Request-ID of the request (generated when the client sent none).")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, for programs: bad_request, not_found, payload_too_large, overloaded, ...")
    message: str = Field(description="For people: what is wrong and how to fix it.")


class ErrorResponse(BaseModel):
    """The error body of the service's own routes."""

    model_config = _examples({"error": {"code": "bad_request", "message": "texts[1] is empty"}})
    error: ErrorDetail


class HealthResponse(BaseModel):
    model_config = _examples({"status": "ok"})
    status: Literal["ok"]


class ReadyChecks(BaseModel):
    vocabulary: bool = Field(description="The tokenizer's vocabulary is loaded.")
    redis: bool = Field(description="Redis answers.")
    workers: int = Field(ge=0, description="Live inference workers serving this model version.")
    backlog: int | None = Field(None, ge=0, description="Requests waiting in the queue (when Redis answers).")


class ReadyResponse(BaseModel):
    model_config = _examples(
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


class ModelInfoResponse(BaseModel):
    model_config = _examples(
        {
            "name": "sentiment",
            "version": 3,
            "limits": {"max_texts_per_request": 64, "max_text_chars": 50000, "max_body_bytes": 1048576, "default_deadline_ms": 2000},
            "metadata": {"name": "sentiment", "version": 3, "label_names": ["negative", "positive"], "decision_threshold": 0.5},
        }
    )
    name: str
    version: int
    limits: Limits
    metadata: dict[str, Any] = Field(description="The version's metadata.json: data set, metrics, hyper-parameters, signatures.")


# --- TensorFlow Serving REST API (/v1) ---------------------------------------------------------


class TFServingError(BaseModel):
    """TensorFlow Serving's error body."""

    model_config = _examples({"error": "Servable not found for request: Latest(nope)"})
    error: str


class TFServingStatus(BaseModel):
    error_code: str = Field(description='A tensorflow.error.Code name: "OK" when the version is healthy.')
    error_message: str


class ModelVersionStatus(BaseModel):
    version: str = Field(description="The version, as a string (int64 in TensorFlow Serving's JSON).")
    state: Literal["UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING", "END"]
    status: TFServingStatus


class ModelStatusResponse(BaseModel):
    model_config = _examples(
        {"model_version_status": [{"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    )
    model_version_status: list[ModelVersionStatus]


class TensorShapeDim(BaseModel):
    size: str = Field(description='The size as a string; "-1" for a dimension of any size.')
    name: str


class TensorShape(BaseModel):
    dim: list[TensorShapeDim]
    unknown_rank: bool


class TensorInfo(BaseModel):
    model_config = ConfigDict(extra="allow")  # coo_sparse / composite_tensor for other kinds of tensors
    name: str
    dtype: str = Field(description="DT_STRING, DT_FLOAT, DT_INT32, ...")
    tensor_shape: TensorShape


class SignatureDef(BaseModel):
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: str
    defaults: dict[str, Any]


class SignatureDefMap(BaseModel):
    signature_def: dict[str, SignatureDef]


class ModelSpec(BaseModel):
    name: str
    version: str
    signature_name: str


class ModelMetadata(BaseModel):
    signature_def: SignatureDefMap


_TEXTS_TENSOR = {
    "name": "predict_text_texts:0",
    "dtype": "DT_STRING",
    "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
}


class ModelMetadataResponse(BaseModel):
    model_config = _examples(
        {
            "model_spec": {"name": "sentiment", "version": "3", "signature_name": ""},
            "metadata": {
                "signature_def": {
                    "signature_def": {
                        "predict_text": {
                            "inputs": {"texts": _TEXTS_TENSOR},
                            "outputs": {
                                "n_tokens": {
                                    "name": "StatefulPartitionedCall:0",
                                    "dtype": "DT_INT32",
                                    "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
                                },
                                "probability": {
                                    "name": "StatefulPartitionedCall:1",
                                    "dtype": "DT_FLOAT",
                                    "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
                                },
                                "token_ids": {
                                    "name": "StatefulPartitionedCall:2",
                                    "dtype": "DT_INT32",
                                    "tensor_shape": {"dim": [{"size": "-1", "name": ""}] * 2, "unknown_rank": False},
                                },
                            },
                            "method_name": "tensorflow/serving/predict",
                            "defaults": {},
                        }
                    }
                }
            },
        }
    )
    model_spec: ModelSpec
    metadata: ModelMetadata


class Base64Value(BaseModel):
    """A string given as base64 (TensorFlow Serving's form for binary strings); it must decode to UTF-8 text here."""

    model_config = ConfigDict(extra="forbid", strict=True)
    b64: str


TextValue = str | Base64Value


class NamedTextInstance(BaseModel):
    """One instance of the row form with its input named: ``{"texts": "..."}``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    texts: TextValue


class NamedTextInputs(BaseModel):
    """The columnar form with its input named: ``{"texts": ["...", ...]}`` (other keys are ignored, as TensorFlow Serving does)."""

    model_config = ConfigDict(strict=True)
    texts: list[TextValue]


class TFPredictRequest(BaseModel):
    """TensorFlow Serving's predict request; only the ``predict_text`` signature (strings in) is served here.

    Unknown keys are ignored, as TensorFlow Serving ignores them.
    """

    model_config = ConfigDict(strict=True)
    signature_name: Literal["predict_text"] | None = Field(
        None,
        description='Must be "predict_text" (texts → probability, token_ids, n_tokens, windows). Unset means "serving_default", '
        "which takes token ids and is refused with 400.",
    )
    instances: list[TextValue | NamedTextInstance] | None = Field(
        None, description='Row form: one text per instance, or {"texts": text} per instance. Answered as "predictions".'
    )
    inputs: list[TextValue] | NamedTextInputs | None = Field(
        None, description='Columnar form: the list of texts, or {"texts": [...]}. Answered as "outputs".'
    )


class PredictTextRow(BaseModel):
    n_tokens: int = Field(description="Tokens in the text (at least 1).")
    probability: float = Field(description="P(positive), a float32 (a long text's windows combined).")
    token_ids: list[int] = Field(
        description="The token ids the model read (a long text's windows in order), right-padded with 0 to the longest text of the request."
    )
    windows: int = Field(description="Windows the text was read in (1 unless it is long).")


class PredictTextColumns(BaseModel):
    n_tokens: list[int]
    probability: list[float]
    token_ids: list[list[int]]
    windows: list[int]


class TFPredictRowResponse(BaseModel):
    model_config = _examples(
        {
            "predictions": [
                {"n_tokens": 5, "probability": 0.98105377, "token_ids": [4, 745, 1305, 928, 19, 0], "windows": 1},
                {"n_tokens": 6, "probability": 0.010182064, "token_ids": [746, 741, 3, 230, 99, 200], "windows": 1},
            ]
        }
    )
    predictions: list[PredictTextRow]


class TFPredictColumnResponse(BaseModel):
    model_config = _examples(
        {"outputs": {"n_tokens": [5], "probability": [0.98105377], "token_ids": [[4, 745, 1305, 928, 19]], "windows": [1]}}
    )
    outputs: PredictTextColumns


class TFPredictResponse(RootModel[TFPredictRowResponse | TFPredictColumnResponse]):
    """``predictions`` for a request in the row form, ``outputs`` for the columnar form."""


# --- KServe Open Inference Protocol v2 (/v2) ------------------------------------------------------

Parameters = dict[str, bool | int | float | str]


class TensorData(RootModel[list["TensorData | str | bool | int | float"]]):
    """A tensor's elements, flat or nested in lists (row-major)."""

    def flat(self) -> list:
        """Every element, in order, lists unnested."""
        elements = []
        for item in self.root:
            elements.extend(item.flat() if isinstance(item, TensorData) else [item])
        return elements


class KServeError(BaseModel):
    """The Open Inference Protocol's error body."""

    model_config = _examples({"error": "unexpected inference inputs 'text': the model takes one input, 'texts' (BYTES, shape [n])"})
    error: str


class ServerMetadataResponse(BaseModel):
    model_config = _examples({"name": "sentiment-service", "version": "0.2.0", "extensions": ["binary_tensor_data"]})
    name: str
    version: str
    extensions: list[str]


class ServerLiveResponse(BaseModel):
    model_config = _examples({"live": True})
    live: bool


class ServerReadyResponse(BaseModel):
    model_config = _examples({"ready": True})
    ready: bool


class ModelReadyResponse(BaseModel):
    model_config = _examples({"name": "sentiment", "ready": True})
    name: str
    ready: bool


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size.")


class KServeModelMetadataResponse(BaseModel):
    model_config = _examples(
        {
            "name": "sentiment",
            "versions": ["3"],
            "platform": "tensorflow_savedmodel",
            "inputs": [{"name": "texts", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": "probability", "datatype": "FP32", "shape": [-1]},
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "explanation", "datatype": "BYTES", "shape": [-1]},
            ],
        }
    )
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class RequestInput(BaseModel):
    # name and datatype are checked by the route, which says what it expected; the enums document it.
    model_config = ConfigDict(extra="forbid")
    name: str = Field(json_schema_extra={"enum": ["texts"]})
    shape: list[int] = Field(description="[n]: n texts.")
    datatype: str = Field(description="BYTES: UTF-8 text.", json_schema_extra={"enum": ["BYTES"]})
    parameters: Parameters | None = Field(None, description='"binary_data_size": the tensor is in the binary part of the body.')
    data: TensorData | None = Field(None, description="The texts (flat or nested); absent when the tensor is sent as binary data.")


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        description='"probability", "label", or "explanation" (each word\'s weight, as JSON per text; only when named here, '
        "and only from versions that can explain: see the model's metadata).",
        json_schema_extra={"enum": ["probability", "label", "explanation"]},
    )
    parameters: Parameters | None = Field(None, description='"binary_data": true to get this output as binary data.')


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, description="Echoed in the response.")
    parameters: Parameters | None = Field(None, description='"binary_data_output": true to get every output as binary data.')
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(None, description='Which outputs to return (default: "probability" and "label").')


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = Field(None, description='"binary_data_size" when the tensor is in the binary part of the body.')
    data: list[float | str] | None = Field(None, description="Absent when the output is sent as binary data.")


class InferenceResponse(BaseModel):
    model_config = _examples(
        {
            "model_name": "sentiment",
            "model_version": "3",
            "id": "42",
            "outputs": [
                {"name": "probability", "datatype": "FP32", "shape": [2], "data": [0.9810537695884705, 0.010182064026594162]},
                {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["positive", "negative"]},
            ],
        }
    )
    model_name: str
    model_version: str
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]
