"""Responses and request bodies of the serving app: JSON documents, errors and the status
each error maps to, and a body read with a size limit.

Shared by the app's handlers (:mod:`~workbench.serving.app`, the composition root), the
admin API (:mod:`~workbench.serving.admin`) and the reservoir route
(:mod:`~workbench.serving.reservoir`), which import it rather than the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect
from starlette.responses import Response

from workbench.errors import (
    HubError,
    InputError,
    IntegrityError,
    ModelLoadError,
    PredictError,
    RepositoryError,
    VersionNotLoadedError,
    WorkbenchError,
)
from workbench.serving import protocol
from workbench.serving.batching import ClientGone, QueueFull
from workbench.serving.protocol import PayloadTooLarge, ProtocolError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.requests import Request
    from starlette.types import Receive

__all__ = [
    "CLIENT_CLOSED",
    "JSON_TYPE",
    "VERSION_HEADER",
    "content_length",
    "declared_length",
    "error_response",
    "json_response",
    "message_for",
    "read_body",
    "receive_body",
    "status_for",
]

VERSION_HEADER = "x-model-version"
JSON_TYPE = "application/json"
CLIENT_CLOSED = 499  # nginx's status for a request whose client went away


def json_response(doc: Any, status: int = 200, version: str | None = None) -> Response:
    headers = {VERSION_HEADER: version} if version else None
    return Response(
        protocol.dumps(doc), status, headers, media_type=JSON_TYPE
    )


def error_response(
    status: int,
    message: str,
    version: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    headers = dict(headers or {})
    if version:
        headers[VERSION_HEADER] = version
    return Response(protocol.error_body(message), status, headers, media_type=JSON_TYPE)


def status_for(exc: BaseException, *, admin: bool = False) -> int:
    """The HTTP status an error maps to (admin calls answer 409 for hub state conflicts)."""
    if isinstance(exc, ProtocolError):
        return exc.status
    if isinstance(exc, QueueFull):
        return 503
    if isinstance(exc, ClientGone | ClientDisconnect):
        return CLIENT_CLOSED
    if isinstance(exc, InputError):
        return 400
    if isinstance(exc, VersionNotLoadedError | LookupError):
        return 404
    if isinstance(exc, HubError):
        return 409 if admin else 503
    if isinstance(exc, IntegrityError):
        return 422
    if isinstance(exc, RepositoryError):
        return 400
    if isinstance(exc, ModelLoadError | PredictError | WorkbenchError):
        return 500
    return 500


def message_for(exc: BaseException) -> str:
    if isinstance(exc, WorkbenchError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


def content_length(value: str | None) -> int | None:
    """A Content-Length header's value, None when absent (chunked)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ProtocolError(f"invalid Content-Length {value!r}") from None


def declared_length(request: Request) -> int | None:
    """The request's Content-Length, or None when it sends none (chunked)."""
    return content_length(request.headers.get("content-length"))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` before reading it all."""
    return await receive_body(request.receive, declared_length(request), limit)


async def receive_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    """The body from ASGI ``receive``; over ``limit`` is refused (413) as soon as it shows,
    by the declared length before anything is read."""
    if declared is not None and declared > limit:
        raise PayloadTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
