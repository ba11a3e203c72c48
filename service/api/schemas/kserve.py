"""The bodies of KServe's Open Inference Protocol v2 (``/v2``), as pydantic models: what validates and what is documented.

Its errors are ``{"error": "..."}``, as the protocol's are.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, RootModel

from service.api.schemas.common import examples

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

    model_config = examples({"error": "unexpected inference inputs 'text': the model takes one input, 'texts' (BYTES, shape [n])"})
    error: str


class ServerMetadataResponse(BaseModel):
    model_config = examples({"name": "sentiment-service", "version": "0.2.0", "extensions": ["binary_tensor_data"]})
    name: str
    version: str
    extensions: list[str]


class ServerLiveResponse(BaseModel):
    model_config = examples({"live": True})
    live: bool


class ServerReadyResponse(BaseModel):
    model_config = examples({"ready": True})
    ready: bool


class ModelReadyResponse(BaseModel):
    model_config = examples({"name": "sentiment", "ready": True})
    name: str
    ready: bool


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size.")


class KServeModelMetadataResponse(BaseModel):
    model_config = examples(
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
        description='"probability" (a two-label version: P(positive), [n]) or "probabilities" (k labels: [n, k], in the order '
        'of the metadata\'s labels), "label", or "explanation" (each word\'s weight, as JSON per text; only when named here, '
        "and only from versions that can explain: see the model's metadata).",
        json_schema_extra={"enum": ["probability", "probabilities", "label", "explanation"]},
    )
    parameters: Parameters | None = Field(None, description='"binary_data": true to get this output as binary data.')


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, description="Echoed in the response.")
    parameters: Parameters | None = Field(None, description='"binary_data_output": true to get every output as binary data.')
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(
        None, description='Which outputs to return (default: "probability" or "probabilities", and "label").'
    )


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = Field(None, description='"binary_data_size" when the tensor is in the binary part of the body.')
    data: list[float | str] | None = Field(None, description="Absent when the output is sent as binary data.")


class InferenceResponse(BaseModel):
    model_config = examples(
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
