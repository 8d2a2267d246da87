"""The ASGI app of a serving instance: Open Inference Protocol v2 REST, health, metrics.

``create_app(hub, settings=...)`` returns a Starlette app serving the hub's model::

    GET  /v2 | /v2/                            server metadata
    GET  /v2/health/live | /v2/health/ready    liveness; readiness (a version loaded and warm)
    GET  /v2/health/deep[?version=V]           real inference on the manifest's sample
    GET  /v2/models/{m}[/versions/{v}]         model metadata (inputs/outputs, datatypes, shapes)
    GET  /v2/models/{m}[/versions/{v}]/ready   readiness of the model / of one version
    GET  /v2/models/{m}[/versions/{v}]/config  Triton-style model configuration
    POST /v2/models/{m}[/versions/{v}]/infer   inference (JSON or binary tensor extension;
                                               a BYTES input of encoded images goes through
                                               the version's codec: serving/images.py;
                                               a pipeline version answers the lines
                                               it reads: serving/pipelines.py)
    GET  /v2/models[/{m}[/versions/{v}]]/stats Triton's statistics extension
    POST /v2/repository/index                  the repository's versions and their state
    POST /v2/repository/models/{m}/load|unload Triton's repository extension (admin token)
    GET  /metrics                              Prometheus text
    /v2/admin/...                              bearer-token admin calls (see admin.py)

A request pins a version with the URL or the ``x-model-version`` header (a version or
an alias); otherwise the active version answers. Every inference response carries
``x-model-version`` and an ``id`` (the request's, or a generated one). Errors are
``{"error": "..."}`` with a 4xx or 5xx status; nothing a client sends can take the
instance down. A full queue answers 503 with ``Retry-After``; a batch over the advertised
``max_batch_size`` is refused with 400, as Triton does.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Route

from workbench.errors import (
    HubError,
    ModelNotFoundError,
    WorkbenchError,
)
from workbench.runtime.pipeline import LoadedPipeline
from workbench.serving import images, pipelines, protocol
from workbench.serving.admin import admin_routes
from workbench.serving.batching import QueueFull
from workbench.serving.connections import PEER_CLOSED
from workbench.serving.images import ImageInference, encoded_images, wants_codec
from workbench.serving.pipelines import PipelineInference
from workbench.serving.protocol import HEADER_LENGTH, ProtocolError
from workbench.serving.reservoir import SegmentedReservoir, reservoir_route
from workbench.serving.responses import (
    JSON_TYPE,
    VERSION_HEADER,
    content_length,
    error_response,
    json_response,
    message_for,
    receive_body,
    status_for,
)
from workbench.serving.segments import SegmentKey, segment_values
from workbench.serving.service import (
    HealthCheckFailed,
    Service,
    ServingSettings,
    batched,
    spec_json,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

    from workbench.runtime.hub import VersionHub
    from workbench.runtime.loaded import LoadedVersion

logger = logging.getLogger(__name__)
access_log = logging.getLogger("workbench.serving.access")

#: Marks a request a canary analysis replays: counted apart, never kept in the reservoir.
REPLAY_HEADER = "x-workbench-replay"
SERVER_NAME = "paddle-workbench"
EXTENSIONS = (
    "binary_tensor_data", "health_deep", "metrics", "model_repository", "statistics", "admin",
)
RETRY_AFTER = "1"  # seconds a client should wait after a 503 for a full queue


def create_app(hub: VersionHub, *, settings: ServingSettings | None = None) -> Starlette:
    """The ASGI app serving ``hub``'s model; ``app.state.service`` is its :class:`Service`."""
    service = Service(hub, settings)
    handlers = _Handlers(service)

    routes = [
        Route("/v2", handlers.server_metadata, methods=["GET"]),
        Route("/v2/", handlers.server_metadata, methods=["GET"]),
        Route("/v2/health/live", handlers.live, methods=["GET"]),
        Route("/v2/health/ready", handlers.ready, methods=["GET"]),
        Route("/v2/health/deep", handlers.deep, methods=["GET"]),
        Route("/v2/models/stats", handlers.stats, methods=["GET"]),
        Route("/v2/models/{model}", handlers.model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/stats", handlers.stats, methods=["GET"]),
        Route("/v2/models/{model}/ready", handlers.model_ready, methods=["GET"]),
        Route("/v2/models/{model}/config", handlers.model_config, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}", handlers.model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/ready", handlers.model_ready,
              methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/config", handlers.model_config,
              methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/stats", handlers.stats, methods=["GET"]),
        Route("/v2/repository/index", handlers.repository_index, methods=["POST", "GET"]),
        Route("/metrics", handlers.metrics, methods=["GET"]),
        *admin_routes(service),
        reservoir_route(service, handlers.reservoir),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = _App(
        handlers,
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
    )
    app.state.service = service
    return app


# -- app-wide error handlers ----------------------------------------------------------


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, f"no such endpoint: {request.method} {request.url.path}")
    if exc.status_code == 405:
        return error_response(405, f"method {request.method} not allowed on {request.url.path}",
                              headers=exc.headers)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, message_for(exc))


# -- handlers ----------------------------------------------------------------------------


class _Handlers:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.model = service.model
        settings = service.settings
        self.reservoir = SegmentedReservoir(
            settings.reservoir_size, keys=settings.segment_by, label=service.metrics.segment_label,
            limit=settings.max_segments)
        self.images = ImageInference(service)
        self.pipelines = PipelineInference(service)
        # ids for responses to requests without one: unique per process start and request
        self._id_prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)

    def _next_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    def _check_model(self, request: Request) -> None:
        name = request.path_params["model"]
        if name != self.model:
            raise ModelNotFoundError(f"unknown model {name!r}; this instance serves {self.model!r}")

    def _loaded(self, ref: str | None) -> LoadedVersion:
        hub = self.service.hub
        if ref is None:
            active = hub.active
            if active is None:
                raise HubError(f"{self.model}: no version is active yet")
            return active
        return hub.get(ref)

    async def server_metadata(self, request: Request) -> Response:
        from workbench import __version__

        return json_response(
            {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}
        )

    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def ready(self, request: Request) -> Response:
        if self.service.ready:
            return json_response({"ready": True})
        return json_response({"ready": False}, 503)

    async def deep(self, request: Request) -> Response:
        ref = request.query_params.get("version") or None
        try:
            report = await self.service.deep_check(ref)
        except HealthCheckFailed as exc:
            return json_response({"ok": False, "error": str(exc), "model": self.model,
                                  "version": exc.version}, 503)
        except Exception as exc:
            return json_response({"ok": False, "error": message_for(exc), "model": self.model}, 503)
        return json_response(report, version=report["version"])

    async def model_metadata(self, request: Request) -> Response:
        try:
            self._check_model(request)
            loaded = self._loaded(request.path_params.get("version"))
        except Exception as exc:
            return error_response(status_for(exc), message_for(exc))
        versioned = "version" in request.path_params
        versions = [str(loaded.version)] if versioned else [
            str(lv.version) for lv in self.service.hub.loaded
        ]
        doc: dict[str, Any] = {
            "name": self.model,
            "versions": versions,
            "platform": "paddle_inference",
            "inputs": [spec_json(spec) for spec in loaded.inputs],
            "outputs": [spec_json(spec) for spec in loaded.outputs],
        }
        if not versioned:
            doc["active_version"] = str(loaded.version)
        if isinstance(loaded, LoadedPipeline):  # how to send it images (serving/pipelines.py)
            doc["platform"] = "workbench_pipeline"
            doc["parameters"] = {"pipeline": pipelines.metadata(loaded)}
        elif (codec := images.metadata(loaded)) is not None:
            doc["parameters"] = {"codec": codec}  # how to send encoded images instead (images.py)
        return json_response(doc, version=str(loaded.version))

    async def model_ready(self, request: Request) -> Response:
        try:
            self._check_model(request)
            ref = request.path_params.get("version")
            if ref is None:
                ready = self.service.ready
                version = self.service.hub.active
            else:
                version = self.service.hub.get(ref)
                ready = version.state.value == "ready"
        except ModelNotFoundError as exc:
            return error_response(404, str(exc))
        except (LookupError, WorkbenchError) as exc:
            return json_response(
                {"name": self.model, "ready": False, "error": message_for(exc)}, 503
            )
        label = str(version.version) if version is not None else None
        doc = {"name": self.model, "ready": ready}
        if label is not None:
            doc["version"] = label
        return json_response(doc, 200 if ready else 503, version=label)

    async def model_config(self, request: Request) -> Response:
        try:
            self._check_model(request)
            loaded = self._loaded(request.path_params.get("version"))
        except Exception as exc:
            return error_response(status_for(exc), message_for(exc))
        batching = self.service.settings.batching
        is_batched = batched(loaded)

        def dims(spec: Any) -> list[int]:
            return list(spec.shape[1:] if is_batched else spec.shape)

        doc: dict[str, Any] = {
            "name": self.model,
            "platform": "paddle_inference",
            "backend": "paddle",
            "version": str(loaded.version),
            "max_batch_size": batching.max_batch_size if is_batched else 0,
            "input": [
                {"name": s.name, "data_type": "TYPE_" + _config_type(s.dtype), "dims": dims(s)}
                for s in loaded.inputs
            ],
            "output": [
                {"name": s.name, "data_type": "TYPE_" + _config_type(s.dtype), "dims": dims(s)}
                for s in loaded.outputs
            ],
            "instance_group": [{"count": self.service.hub.workers, "kind":
                                "KIND_GPU" if loaded.device.startswith("gpu") else "KIND_CPU"}],
        }
        if batching.enabled and is_batched:
            doc["dynamic_batching"] = {
                "max_queue_delay_microseconds": int(batching.max_queue_delay_ms * 1000)
            }
        return json_response(doc, version=str(loaded.version))

    async def repository_index(self, request: Request) -> Response:
        hub = self.service.hub
        loaded = {str(lv.version): lv for lv in hub.loaded}
        try:
            published = [str(v) for v in hub.repository.versions(self.model)]
        except Exception as exc:
            return error_response(status_for(exc), message_for(exc))
        active = hub.active
        index = []
        # the repository's versions in order, then any loaded one since deleted from it
        for version in published + [v for v in loaded if v not in published]:
            lv = loaded.get(version)
            state = "UNAVAILABLE" if lv is None else lv.state.value.upper()
            entry = {"name": self.model, "version": version, "state": state}
            if lv is not None and lv is active:
                entry["reason"] = "active"
            index.append(entry)
        return json_response(index)

    async def metrics(self, request: Request) -> Response:
        body, content_type = self.service.metrics.render()
        return Response(body, media_type=content_type)

    async def stats(self, request: Request) -> Response:
        hub = self.service.hub
        try:
            if "model" in request.path_params:
                self._check_model(request)
            ref = request.path_params.get("version")
            versions = [str(self._loaded(ref).version)] if ref else [
                str(lv.version) for lv in hub.loaded
            ]
        except Exception as exc:
            return error_response(status_for(exc), message_for(exc))
        document = self.service.statistics.document(versions)
        if "model" not in request.path_params:  # and a pipeline's stages, as Triton's ensembles
            document["model_stats"].extend(self.service.stage_documents())
        return json_response(document)

    async def infer(self, scope: Scope, receive: Receive, send: Send, model: str,
                    pinned: str | None) -> None:
        """``POST /v2/models/{model}[/versions/{pinned}]/infer``, on the bare ASGI scope."""
        started = time.perf_counter()
        service = self.service
        head = _InferHead(scope["headers"])
        version = ""
        status = 200
        timings: list[float] = []
        extra: list[tuple[bytes, bytes]] = []
        segments: dict[SegmentKey, str | None] | None = None
        try:
            ref = self._infer_ref(model, pinned, head.version)
            decoded = await self._decode(head, receive)
            if service.segment_keys:
                segments = segment_values(service.segment_keys, scope["headers"],
                                          decoded.parameters)
            loaded = service.take(ref)
            try:
                version = loaded.version_label
                if wants_codec(decoded):  # encoded images in, the task's result out
                    if service.settings.faults is not None:
                        await service.settings.faults.apply(version, segments)
                    computed = time.perf_counter()
                    name, images = encoded_images(decoded)
                    if isinstance(loaded, LoadedPipeline):  # lines out (serving/pipelines.py)
                        result = await self.pipelines.infer(loaded, decoded, images, gone=_peer_probe(scope))
                    else:
                        result = await self.images.infer(loaded, decoded, images, gone=_peer_probe(scope))
                    if not head.replay:
                        self.reservoir.offer_images(name, images, segments)
                else:
                    inputs = service.check_inputs(
                        loaded, decoded.inputs, [out.name for out in decoded.outputs or ()]
                    )
                    service.check_batch(loaded, decoded.batch_size)
                    if not head.replay:
                        self.reservoir.offer(inputs, segments)
                    if service.settings.faults is not None:
                        await service.settings.faults.apply(version, segments)
                    computed = time.perf_counter()
                    result = await service.run(loaded, inputs, gone=_peer_probe(scope))
                encoding = time.perf_counter()
                content, json_length = protocol.encode_infer_response(
                    model=self.model,
                    version=version,
                    outputs=result.outputs,
                    request_id=decoded.id if decoded.id is not None else self._next_id(),
                    requested=decoded.outputs,
                    binary_output=decoded.binary_output,
                )
            finally:
                service.give_back(loaded)
            timings = [computed - started, result.queue_seconds, result.compute_seconds,
                       time.perf_counter() - encoding]
            content_type = _JSON
            if json_length is not None:
                content_type = _OCTETS
                extra.append((_HEADER_LENGTH, b"%d" % json_length))
        except Exception as exc:
            status = status_for(exc)
            if status >= 500:
                logger.error("%s:%s inference failed: %s", self.model, version or "-", exc,
                             exc_info=not isinstance(exc, WorkbenchError | QueueFull))
            if isinstance(exc, QueueFull):
                extra.append((b"retry-after", RETRY_AFTER.encode()))
            content, content_type = protocol.error_body(message_for(exc)), _JSON
        if version:
            extra.append((_VERSION, version.encode()))
        seconds = time.perf_counter() - started
        service.metrics.request(version, status, seconds, replay=head.replay)
        if service.metrics.segment_keys and not head.replay:
            if segments is None:  # the body never decoded: headers only
                segments = segment_values(service.segment_keys, scope["headers"], None)
            service.metrics.segment_request(version, status, seconds, segments)
        if version:
            stats = service.statistics.version(version)
            if timings:
                stats.succeeded(decoded.batch_size, seconds, *timings)
            else:
                stats.failed(seconds)
        if service.settings.access_log:
            method, path = scope["method"], scope["path"]
            access_log.info(
                "%s %s %d version=%s %.2fms", method, path, status,
                version or "-", seconds * 1000.0,
                extra={"model_version": version or None, "status": status,
                       "method": method, "path": path,
                       "duration_ms": round(seconds * 1000.0, 3)},
            )
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", content_type), (b"content-length", b"%d" % len(content)), *extra,
        ]})
        await send({"type": "http.response.body", "body": content})

    def _infer_ref(self, model: str, pinned: str | None, header: str | None) -> str | None:
        """The version or alias a request pins (URL or header), None for the active one."""
        if model != self.model:
            raise ModelNotFoundError(f"unknown model {model!r}; this instance serves {self.model!r}")
        if pinned is None:
            return header or None
        if header and header != pinned:
            raise ProtocolError(
                f"the URL asks for version {pinned!r} but the {VERSION_HEADER} header for "
                f"{header!r}"
            )
        return pinned

    async def _decode(self, head: _InferHead, receive: Receive) -> protocol.InferRequest:
        """Read and decode the body; a large one waits its turn and decodes off the loop."""
        decoder = self.service.decoder
        declared = content_length(head.content_length)
        json_size = declared
        if head.header_length is not None:  # binary extension: only the JSON part counts
            json_size = _int_or_none(head.header_length)
        if decoder.is_large(json_size):
            async with decoder.gate:
                return await self._read_and_decode(head, declared, receive)
        return await self._read_and_decode(head, declared, receive)

    async def _read_and_decode(self, head: _InferHead, declared: int | None,
                               receive: Receive) -> protocol.InferRequest:
        service = self.service
        settings = service.settings
        body = await receive_body(receive, declared, settings.max_body_bytes)
        if head.encoding:  # zlib lets go of the GIL: a thread is enough
            body = await service.offload(
                len(body), protocol.decompress, body, head.encoding, settings.max_body_bytes
            )
        header_length = protocol.parse_header_length(head.header_length, len(body))
        return await service.decoder.decode(
            body, header_length, allow_nonfinite=not settings.reject_nonfinite
        )


_JSON = JSON_TYPE.encode()
_OCTETS = b"application/octet-stream"
_VERSION = VERSION_HEADER.encode()
_HEADER_LENGTH = HEADER_LENGTH.lower().encode()
_REPLAY = REPLAY_HEADER.encode()


class _InferHead:
    """The request headers an inference needs, read in one pass over the raw list."""

    __slots__ = ("content_length", "encoding", "header_length", "replay", "version")

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self.content_length: str | None = None  # parsed where its error can be answered
        self.header_length: str | None = None
        self.encoding: str | None = None
        self.version: str | None = None
        self.replay = False
        for name, value in raw:
            if name == b"content-length":
                self.content_length = value.decode("latin-1")
            elif name == _HEADER_LENGTH:
                self.header_length = value.decode("latin-1")
            elif name == _VERSION:
                self.version = value.decode("latin-1")
            elif name == b"content-encoding":
                self.encoding = value.decode("latin-1") or None
            elif name == _REPLAY:
                self.replay = True


class _App(Starlette):
    """The Starlette app with inference taken before routing and middleware.

    ``/v2/models/{m}[/versions/{v}]/infer`` is the path every client pays on, so it
    skips the router, the middleware stack and the Request/Response objects: one pass
    over the headers, the body read under its limit, two ASGI messages back. Every
    other path goes through Starlette as before.
    """

    def __init__(self, handlers: _Handlers, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._infer = handlers.infer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            target = infer_target(scope["path"])
            if target is not None:
                if scope["method"] == "POST":
                    await self._infer(scope, receive, send, *target)
                    return
                response = error_response(
                    405, f"method {scope['method']} not allowed on {scope['path']}",
                    headers={"Allow": "POST"},
                )
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def infer_target(path: str) -> tuple[str, str | None] | None:
    """``(model, version or None)`` when ``path`` is an inference URL, else None."""
    if not (path.startswith("/v2/models/") and path.endswith("/infer")):
        return None
    parts = path[len("/v2/models/"):-len("/infer")].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return parts[0], parts[2]
    return None


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _peer_probe(scope: Scope) -> Callable[[], bool] | None:
    """The connection's "has the client gone?" probe, when the server provides one."""
    extensions = scope.get("extensions") or {}
    probe: Callable[[], bool] | None = extensions.get(PEER_CLOSED)
    return probe


def _config_type(dtype: str) -> str:
    datatype = protocol.datatype_of(dtype)
    return {"BYTES": "STRING"}.get(datatype, datatype)


__all__ = [
    "VERSION_HEADER",
    "create_app",
    "error_response",
    "json_response",
    "message_for",
    "status_for",
]
