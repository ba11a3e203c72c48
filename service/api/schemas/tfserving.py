"""The bodies of TensorFlow Serving's REST API (``/v1``), as pydantic models: what validates and what is documented.

Its errors are ``{"error": "..."}``, as TensorFlow Serving's are.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from service.api.schemas.common import examples


class TFServingError(BaseModel):
    """TensorFlow Serving's error body."""

    model_config = examples({"error": "Servable not found for request: Latest(nope)"})
    error: str


class TFServingStatus(BaseModel):
    error_code: str = Field(description='A tensorflow.error.Code name: "OK" when the version is healthy.')
    error_message: str


class ModelVersionStatus(BaseModel):
    version: str = Field(description="The version, as a string (int64 in TensorFlow Serving's JSON).")
    state: Literal["UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING", "END"]
    status: TFServingStatus


class ModelStatusResponse(BaseModel):
    model_config = examples(
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
    model_config = examples(
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
    probability: float | None = Field(None, description="A two-label version: P(positive), a float32 (a long text's windows combined).")
    probabilities: list[float] | None = Field(
        None, description="A version of k labels: each label's probability, in the order of its metadata's labels."
    )
    label: str | None = Field(None, description="A version of k labels: the likeliest label.")
    token_ids: list[int] = Field(
        description="The token ids the model read (a long text's windows in order), right-padded with 0 to the longest text of the request."
    )
    windows: int = Field(description="Windows the text was read in (1 unless it is long).")


class PredictTextColumns(BaseModel):
    n_tokens: list[int]
    probability: list[float] | None = None
    probabilities: list[list[float]] | None = None
    label: list[str] | None = None
    token_ids: list[list[int]]
    windows: list[int]


class TFPredictRowResponse(BaseModel):
    model_config = examples(
        {
            "predictions": [
                {"n_tokens": 5, "probability": 0.98105377, "token_ids": [4, 745, 1305, 928, 19, 0], "windows": 1},
                {"n_tokens": 6, "probability": 0.010182064, "token_ids": [746, 741, 3, 230, 99, 200], "windows": 1},
            ]
        }
    )
    predictions: list[PredictTextRow]


class TFPredictColumnResponse(BaseModel):
    model_config = examples(
        {"outputs": {"n_tokens": [5], "probability": [0.98105377], "token_ids": [[4, 745, 1305, 928, 19]], "windows": [1]}}
    )
    outputs: PredictTextColumns


class TFPredictResponse(RootModel[TFPredictRowResponse | TFPredictColumnResponse]):
    """``predictions`` for a request in the row form, ``outputs`` for the columnar form."""
