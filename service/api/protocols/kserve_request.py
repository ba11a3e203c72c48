"""Reading an Open Inference Protocol inference request: its JSON header, binary tensors, the texts, the outputs asked for.

The binary tensor data extension (what ``tritonclient`` sends by default) puts
the JSON header first, its length in ``Inference-Header-Content-Length``, then
each tensor's bytes in the order of the inputs that declare a
``binary_data_size``; a BYTES element is a 4-byte little-endian length and its
bytes (`service.packing`). Every way a request can be wrong is a 400 that says
which.
"""

from __future__ import annotations

from service.api.bodies import parse_json, validated
from service.api.schemas.kserve import InferenceRequest, RequestInput
from service.errors import BadRequest
from service.packing import TruncatedElement, read_bytes_elements

HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT = "texts"
OUTPUTS = {"probability": "FP32", "label": "BYTES"}  # every output of a request that names none (two labels)
CATEGORICAL_OUTPUTS = {"probabilities": "FP32", "label": "BYTES"}  # the same of a k-label version: [n, k] probabilities
EXPLANATION = "explanation"  # BYTES, JSON per text: returned only when named (a backward pass: ~2x the cost)


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, memoryview]:
    """The JSON header, validated, and the binary part of the body that follows it (empty without the extension);
    ``header_length`` is the ``Inference-Header-Content-Length`` header, if any."""
    binary = memoryview(b"")
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise BadRequest(f"{HEADER_LENGTH} must be the length in bytes of the JSON header, at most the body's {len(body)} bytes")
        binary = memoryview(body)[int(header_length) :]
        body = body[: int(header_length)]
    payload = parse_json(body, "the inference request")
    return validated(InferenceRequest, payload, "the inference request must be a JSON object"), binary


def input_texts(inputs: list[RequestInput], binary: memoryview) -> list:
    """The ``texts`` input's elements (text, or whatever JSON gave for `Scorer.check_texts` to refuse), from JSON or binary data."""
    if len(inputs) != 1 or inputs[0].name != INPUT:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise BadRequest(f"unexpected inference inputs {names}: the model takes one input, '{INPUT}' (BYTES, shape [n])")
    tensor = inputs[0]
    if tensor.datatype != "BYTES":
        raise BadRequest(f"input '{INPUT}' has datatype {tensor.datatype}; it must be BYTES (UTF-8 text)")
    if len(tensor.shape) != 1 or tensor.shape[0] < 0:
        raise BadRequest(f"input '{INPUT}' has shape {tensor.shape}; it must be [n], n texts")
    count = tensor.shape[0]
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if tensor.data is not None:
            raise BadRequest(f"input '{INPUT}' has both binary_data_size and data: send one")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= len(binary):
            raise BadRequest(f"input '{INPUT}' has binary_data_size {size!r}; the body holds {len(binary)} bytes of binary data")
        if size != len(binary):
            raise BadRequest(f"the body holds {len(binary)} bytes of binary data; input '{INPUT}' declares {size}")
        try:
            elements = list(read_bytes_elements(binary))
        except TruncatedElement as exc:
            inside = "an element's 4-byte length" if exc.length is None else f"an element of {exc.length} bytes"
            raise BadRequest(f"binary data of input '{INPUT}' ends inside {inside}, at byte {exc.at}") from None
    else:
        if tensor.data is None:
            raise BadRequest(f"input '{INPUT}' has neither data nor binary_data_size")
        if len(binary):
            raise BadRequest(f"the body holds {len(binary)} bytes of binary data that no input declares (binary_data_size)")
        elements = tensor.data.flat()
    if len(elements) != count:
        raise BadRequest(f"input '{INPUT}' has shape [{count}] but {len(elements)} elements")
    return [_text(element, index) for index, element in enumerate(elements)]


def _text(element: object, index: int) -> object:
    """A BYTES element as text: JSON strings as they are, binary elements decoded as UTF-8; anything else is left to `check_texts`."""
    if isinstance(element, bytes):
        try:
            return element.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"{INPUT}[{index}] is not valid UTF-8 (byte {exc.start})") from None
    return element


def requested_outputs(parsed: InferenceRequest, outputs: dict[str, str]) -> list[tuple[str, bool]]:
    """(name, as binary) of each output to return, in the order asked (every one but ``explanation`` when none are named)."""
    default_binary = _flag(parsed.parameters, "binary_data_output", False)
    if not parsed.outputs:
        return [(name, default_binary) for name in outputs if name != EXPLANATION]
    chosen = []
    for output in parsed.outputs:
        if output.name == EXPLANATION and EXPLANATION not in outputs:
            raise BadRequest(f"output '{EXPLANATION}' is not available: this model version was exported before explanations")
        if output.name not in outputs:
            raise BadRequest(f"unexpected inference output '{output.name}': the model's outputs are {', '.join(outputs)}")
        if any(output.name == name for name, _ in chosen):
            raise BadRequest(f"output '{output.name}' is asked for twice")
        chosen.append((output.name, _flag(output.parameters, "binary_data", default_binary)))
    return chosen


def _flag(parameters: dict | None, name: str, default: bool) -> bool:
    value = (parameters or {}).get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f'parameter "{name}" must be true or false, not {value!r}')
    return value
