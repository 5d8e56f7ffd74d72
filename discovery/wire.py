"""The push front ends' wire formats, defined once, beside the model: the seed's REST
bodies (``RegisterResponse``, ``FindRequest``) and capsync's answers. What a worker
sends to register (a declaration, the WebSocket's ``CapabilityUpdate`` envelope) is
decoded by ``discovery.intake``; the declaration itself is validated by
``discovery.schema``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from discovery import schema


class FieldError(BaseModel):
    field: str = Field(description="the field path, e.g. static_analysis_tools[0].tool_name")
    message: str


class Validation(Protocol):
    """A failed validation: pydantic's ValidationError, FastAPI's RequestValidationError."""

    def errors(self) -> Sequence[Any]: ...


def validation_errors(exc: Validation, *, skip: int = 0) -> list[FieldError]:
    """The errors of a failed validation as capsync's field paths; ``skip`` drops leading
    location parts (FastAPI's ``body``)."""
    return [
        FieldError(field=schema.format_loc(tuple(e["loc"][skip:])), message=e["msg"])
        for e in exc.errors()
    ]


class RegisterResponse(BaseModel):
    """The seed's answer to ``POST /workers/register``; ``errors`` when it was refused."""

    success: bool
    message: str
    errors: list[FieldError] = Field(default_factory=list)


class FindRequest(BaseModel):
    """The seed's ``FindRequest``: find_with_capability(capability_type, tool in
    required_tools)."""

    model_config = ConfigDict(extra="forbid")

    capability_type: str = Field(max_length=64)
    required_tools: list[str] = Field(max_length=100)


class UpdateAnswer(BaseModel):
    """capsync's answer to every WebSocket message."""

    ok: bool
    action: str | None = None
    id: str | None = None
    message: str = ""
    errors: list[FieldError] = Field(default_factory=list)


class HealthOut(BaseModel):
    """A worker's health, from where it lives: passing, warning or critical, and why."""

    status: Literal["passing", "warning", "critical"]
    output: str


class WorkerOut(BaseModel):
    """One worker as the registry holds it."""

    id: str
    node: str
    owner: str
    source: str
    ref: str
    address: str
    declaration: dict[str, Any]
    health: HealthOut
