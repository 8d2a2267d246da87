"""Admin calls of a serving instance, behind a bearer token.

::

    GET  /v2/admin/status                       loaded versions, active, history, settings
    POST /v2/admin/load     {"version", "activate": false}
    POST /v2/admin/unload   {"version", "timeout": 30}
    POST /v2/admin/use      {"version"}
    POST /v2/admin/rollback
    POST /v2/admin/reload   {"version": <startup ref>}  re-resolve (an alias, "latest") and switch

Triton's model repository extension, behind the same token (``tritonclient``'s
``load_model`` / ``unload_model`` send ``Authorization`` through their ``headers``)::

    POST /v2/repository/models/{m}/load    {"parameters": {"version": ref}}  load ref
         (default: the instance's startup ref, re-resolved) and make it active
    POST /v2/repository/models/{m}/unload  {"parameters": {"version": ref}}  unload ref;
         without a version, every loaded version but the active one (an instance
         always serves one; stop the instance to free it)

With no token configured the admin API does not exist (404). A missing or wrong
``Authorization: Bearer <token>`` gets 401. Loading and unloading run in a thread:
the event loop keeps serving inference while a version loads, warms or drains.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.routing import Route

from workbench.serving.protocol import ProtocolError, loads
from workbench.serving.responses import error_response, json_response, message_for, read_body, status_for
from workbench.serving.service import describe

if TYPE_CHECKING:
    from starlette.requests import Request

    from workbench.serving.service import Service

logger = logging.getLogger(__name__)
MAX_ADMIN_BODY = 64 * 1024

Handler = Callable[["Request"], Awaitable[Response]]


def admin_routes(service: Service) -> list[Route]:
    """The admin routes; each checks the token before doing anything."""
    admin = _Admin(service)
    return [
        Route("/v2/admin/status", admin.guard(admin.status), methods=["GET"]),
        Route("/v2/admin/load", admin.guard(admin.load), methods=["POST"]),
        Route("/v2/admin/unload", admin.guard(admin.unload), methods=["POST"]),
        Route("/v2/admin/use", admin.guard(admin.use), methods=["POST"]),
        Route("/v2/admin/rollback", admin.guard(admin.rollback), methods=["POST"]),
        Route("/v2/admin/reload", admin.guard(admin.reload), methods=["POST"]),
        Route("/v2/repository/models/{model}/load", admin.guard(admin.repository_load),
              methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", admin.guard(admin.repository_unload),
              methods=["POST"]),
    ]


def guarded(service: Service, handler: Handler) -> Handler:
    """``handler`` behind the admin token, for admin routes defined in other modules."""
    return _Admin(service).guard(handler)


def check_token(configured: str | None, authorization: str | None) -> int | None:
    """None if ``authorization`` carries the configured token, else the HTTP status to answer."""
    if not configured:
        return 404
    if not authorization:
        return 401
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return 401
    if not hmac.compare_digest(token.strip().encode(), configured.encode()):
        return 401
    return None


class _Admin:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.hub = service.hub
        self._lock = asyncio.Lock()  # one admin action at a time

    def guard(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            refused = check_token(
                self.service.settings.admin_token, request.headers.get("authorization")
            )
            if refused == 404:
                return error_response(404, "the admin API is off (no admin token configured)")
            if refused == 401:
                logger.warning("admin call %s refused: bad or missing token", request.url.path)
                response = error_response(401, "a valid bearer token is required")
                response.headers["WWW-Authenticate"] = 'Bearer realm="workbench-admin"'
                return response
            try:
                return await handler(request)
            except Exception as exc:
                status = status_for(exc, admin=True)
                if status >= 500:
                    logger.error("admin %s failed: %s", request.url.path, exc)
                return error_response(status, message_for(exc))

        return guarded

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await read_body(request, MAX_ADMIN_BODY)
        if not raw.strip():
            return {}
        try:
            doc = loads(raw)
        except ValueError as exc:
            raise ProtocolError(f"admin body is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ProtocolError("admin body must be a JSON object")
        return doc

    @staticmethod
    def _version(doc: dict[str, Any], *, required: bool = True) -> str | None:
        value = doc.get("version")
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise ProtocolError("give the version (or alias) as {\"version\": \"...\"}")
        return value

    def _require(self, doc: dict[str, Any]) -> str:
        ref = self._version(doc)
        assert ref is not None
        return ref

    def _done(self, action: str, **extra: Any) -> Response:
        active = self.hub.active
        doc = {"ok": True, "action": action, **extra,
               "active": str(active.version) if active else None}
        logger.info("admin %s: %s", action, {k: v for k, v in doc.items() if k != "ok"})
        return json_response(doc)

    async def status(self, request: Request) -> Response:
        return json_response(self.service.status())

    async def load(self, request: Request) -> Response:
        doc = await self._body(request)
        ref = self._require(doc)
        activate = doc.get("activate", False)
        if not isinstance(activate, bool):
            raise ProtocolError("'activate' must be true or false")
        async with self._lock:
            loaded = await self.service.control(self.hub.load, ref, activate=activate)
        return self._done("load", version=str(loaded.version), loaded=describe(loaded))

    async def unload(self, request: Request) -> Response:
        doc = await self._body(request)
        ref = self._require(doc)
        timeout = doc.get("timeout", 30.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0:
            raise ProtocolError("'timeout' must be a non-negative number of seconds")
        async with self._lock:
            loaded = await self.service.control(self.hub.get, ref)
            await self.service.control(self.hub.unload, loaded.version, timeout=float(timeout))
        return self._done("unload", version=str(loaded.version))

    async def use(self, request: Request) -> Response:
        doc = await self._body(request)
        ref = self._require(doc)
        async with self._lock:
            previous = self.hub.active
            loaded = await self.service.control(self.hub.use, ref)
        return self._done("use", version=str(loaded.version),
                          previous=str(previous.version) if previous else None)

    async def rollback(self, request: Request) -> Response:
        async with self._lock:
            previous = self.hub.active
            loaded = await self.service.control(self.hub.rollback)
        return self._done("rollback", version=str(loaded.version),
                          previous=str(previous.version) if previous else None)

    async def reload(self, request: Request) -> Response:
        doc = await self._body(request)
        ref = self._version(doc, required=False) or self.service.settings.reload_ref
        return await self._reload(ref)

    async def _reload(self, ref: str) -> Response:
        async with self._lock:
            previous = self.hub.active
            target = await self.service.control(
                self.hub.repository.resolve, self.hub.model, ref
            )
            if previous is not None and previous.version == target:
                return self._done("reload", version=str(target), ref=ref, changed=False)
            loaded = await self.service.control(self.hub.load, target, activate=True)
        return self._done("reload", version=str(loaded.version), ref=ref, changed=True,
                          previous=str(previous.version) if previous else None)

    # -- Triton's repository extension -------------------------------------------------

    async def _triton_ref(self, request: Request) -> str | None:
        """Check the model name; the optional ``parameters.version`` of the body."""
        from workbench.errors import ModelNotFoundError

        name = request.path_params["model"]
        if name != self.service.model:
            raise ModelNotFoundError(
                f"unknown model {name!r}; this instance serves {self.service.model!r}"
            )
        params = (await self._body(request)).get("parameters") or {}
        if not isinstance(params, dict):
            raise ProtocolError("'parameters' must be an object")
        return self._version(params, required=False)

    async def repository_load(self, request: Request) -> Response:
        ref = await self._triton_ref(request)
        return await self._reload(ref or self.service.settings.reload_ref)

    async def repository_unload(self, request: Request) -> Response:
        ref = await self._triton_ref(request)
        async with self._lock:
            if ref is not None:
                targets = [await self.service.control(self.hub.get, ref)]
            else:
                targets = [lv for lv in self.hub.loaded if lv is not self.hub.active]
            for loaded in targets:
                await self.service.control(self.hub.unload, loaded.version)
        return self._done("unload", versions=[str(lv.version) for lv in targets])
