"""Two rules the gRPC front end applies before a call reaches its servicer, as one server
interceptor:

- long-lived calls that need no token (health ``Watch``, server reflection) count under a
  cap of their own (``grpc.max_open_streams``), so they cannot take the calls
  ``Register`` needs; one more is answered RESOURCE_EXHAUSTED;
- a request that is not a valid message (a string field that is not UTF-8, truncated
  bytes) is INVALID_ARGUMENT for a unary call, and an ``UpdateAnswer`` naming it in a
  Session (the stream goes on), never INTERNAL: the intake's "strict UTF-8" on this way in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

OPEN_STREAMS = frozenset(
    {
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)


@dataclass(frozen=True)
class Undecodable:
    """A request message that could not be parsed, and why."""

    reason: str


def malformed(request: Undecodable) -> str:
    return f"malformed message: {request.reason}"


class Limits(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, service: str, max_open_streams: int) -> None:
        self.service = f"/{service}/"
        self.max_open_streams = max_open_streams
        self._slots = threading.BoundedSemaphore(max_open_streams)

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        if method in OPEN_STREAMS:
            return self._capped(handler)
        if method.startswith(self.service):
            return _decoded(handler)
        return handler

    def _capped(self, handler: Any) -> Any:
        arity = "unary_stream" if handler.unary_stream else "stream_stream"
        behavior = getattr(handler, arity)

        def capped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            if not self._slots.acquire(blocking=False):
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "too many open streams that need no token (grpc.max_open_streams = "
                    f"{self.max_open_streams})",
                )
            try:
                yield from behavior(request, context)
            finally:
                self._slots.release()

        return handler._replace(**{arity: capped})


def _decoded(handler: Any) -> Any:
    parse = handler.request_deserializer

    def deserialize(raw: bytes) -> Any:
        try:
            return parse(raw)
        except DecodeError as exc:
            return Undecodable(str(exc))

    if handler.request_streaming:
        return handler._replace(request_deserializer=deserialize)  # the servicer answers
    arity = "unary_unary" if handler.unary_unary else "unary_stream"
    behavior = getattr(handler, arity)

    def checked(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, malformed(request))
        return behavior(request, context)

    return handler._replace(request_deserializer=deserialize, **{arity: checked})
