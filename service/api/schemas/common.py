"""What the schemas of every protocol share: the service's own error body, a model's reference, examples."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def examples(*values: Any) -> ConfigDict:
    """A model config whose JSON schema carries ``values`` as examples (real answers of the service)."""
    return ConfigDict(json_schema_extra={"examples": list(values)})


class ModelRef(BaseModel):
    name: str
    version: int


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, for programs: bad_request, not_found, payload_too_large, overloaded, ...")
    message: str = Field(description="For people: what is wrong and how to fix it.")


class ErrorResponse(BaseModel):
    """The error body of the service's own routes."""

    model_config = examples({"error": {"code": "bad_request", "message": "texts[1] is empty"}})
    error: ErrorDetail
