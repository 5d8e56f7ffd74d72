"""Fault injection: answers a real agent, or a proxy in front of it, can give that are not data.

A fault matches requests by path (exact, or as a prefix) and optionally by method. When it
matches it sleeps `delay` seconds, then answers `status` with `body` and `headers` in place of
the API (a status of 0 only delays, and the request goes on to the API). `times` limits how
many requests it takes (None: every one). Faults are tried in the order they were added; each
matching one is consumed, and the first with a status ends the request.

Faults are driven from outside the double in three ways, all with the same fields:
- Python: `ConsulDouble.inject(Fault(...))`, `clear_faults()`;
- HTTP, on a path Consul never serves: `PUT /_double/faults` with a fault as JSON adds it,
  `GET` lists the active ones, `DELETE` removes them all (control requests are not recorded
  and never faulted);
- the command line: `python -m tests.doubles.consul --fault '<json>'`, repeatable.
"""

from __future__ import annotations

import threading
import time

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONTROL_PATH = "/_double/faults"
_TEXT = {"Content-Type": "text/plain; charset=utf-8"}


class Fault(BaseModel):
    """One injected answer; the JSON form of the control endpoint and of `--fault`."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field("/", min_length=1, description="request path, e.g. /v1/txn")
    prefix: bool = Field(True, description="match every path starting with `path`")
    method: str | None = Field(None, description="only this HTTP method (any when null)")
    status: int = Field(0, ge=0, le=599, description="0: delay only, then the real answer")
    body: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    times: int | None = Field(None, ge=0, description="answer this many requests, then stop")
    delay: float = Field(0.0, ge=0.0, description="seconds to wait before answering")

    @field_validator("status")
    @classmethod
    def _http_status(cls, status: int) -> int:
        if status and status < 100:
            raise ValueError("an HTTP status is 100-599 (or 0 for a delay only)")
        return status

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return path.startswith(self.path) if self.prefix else path == self.path


def _headers(given: dict[str, str]) -> dict[str, str]:
    """The fault's headers, plain text unless it names its own Content-Type; the server
    sets Content-Length from the body."""
    kept = {name: value for name, value in given.items() if name.lower() != "content-length"}
    if any(name.lower() == "content-type" for name in kept):
        return kept
    return {**_TEXT, **kept}


class FaultError(ValueError):
    """A fault description that cannot be used; the message says which field and why."""


def parse_fault(text: str | bytes) -> Fault:
    try:
        return Fault.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()
        )
        raise FaultError(f"invalid fault: {problems}") from None


class Faults:
    """The active faults, shared by every request thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: list[Fault] = []

    def add(self, fault: Fault) -> None:
        if fault.times == 0:
            return
        with self._lock:
            self._active.append(fault.model_copy(deep=True))

    def clear(self) -> None:
        with self._lock:
            self._active.clear()

    def active(self) -> list[Fault]:
        with self._lock:
            return [f.model_copy(deep=True) for f in self._active]

    def answer(self, method: str, path: str) -> tuple[int, bytes, dict[str, str]] | None:
        """Apply the matching faults to one request: sleep, then the answer to give if any."""
        delay, answer = 0.0, None
        with self._lock:
            for fault in self._active:
                if not fault.matches(method, path):
                    continue
                if fault.times is not None:
                    fault.times -= 1
                delay += fault.delay
                if fault.status:
                    answer = (fault.status, fault.body.encode(), _headers(fault.headers))
                    break
            self._active = [f for f in self._active if f.times != 0]
        if delay:
            time.sleep(delay)
        return answer
