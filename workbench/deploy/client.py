"""A small HTTP client for one serving instance (or a router in front of some).

The deploy layer judges instances the way a user's client sees them: over the Open
Inference Protocol REST API, through the deploy layer's one HTTP seam
(:func:`~workbench.deploy.http.request_within`), so each request has a total deadline from
connect to the last byte. Every transport error, every deadline and every error status
becomes a :class:`~workbench.errors.ServingError` (with ``status`` when there was a response).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import TYPE_CHECKING, Any

from workbench.deploy.exposition import parse_metrics
from workbench.deploy.http import Answer, DeadlineError, request_within
from workbench.errors import ServingError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from workbench._types import Array, TensorsIn

log = logging.getLogger(__name__)

_DATATYPES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
_DTYPES: dict[str, str] = {v: k for k, v in _DATATYPES.items()}


@dataclass(frozen=True)
class Health:
    """A health endpoint's answer: ``ok`` and what it said (or why it could not say)."""

    ok: bool
    status: int | None = None
    detail: dict[str, Any] = field(default_factory=dict, compare=False)
    error: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class InferResult:
    """An inference response: the outputs by name and the version (and colour) that answered."""

    outputs: dict[str, Array]
    version: str | None
    model: str | None = None
    color: str | None = None  # from the router's x-deploy-color, when behind a router
    seconds: float = 0.0


def encode_inputs(inputs: TensorsIn) -> dict[str, Any]:
    """The JSON body of an infer request for ``inputs``.

    An array of ``bytes`` (dtype object or ``S``: encoded images, one per element) goes as
    a ``BYTES`` input, base64 with ``"parameters": {"content_type": "base64"}``, the way
    the serving instance reads images in JSON; strings go as ``BYTES`` text.
    """
    import numpy as np

    encoded = []
    for name, value in inputs.items():
        array = np.asarray(value)
        if array.dtype.kind in "OSU":
            encoded.append(_encode_bytes(name, array))
            continue
        try:
            datatype = _DATATYPES[array.dtype.name]
        except KeyError:
            raise ValueError(f"input {name!r}: unsupported dtype {array.dtype.name}") from None
        encoded.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "data": array.reshape(-1).tolist(),
            }
        )
    return {"inputs": encoded}


def _encode_bytes(name: str, array: Array) -> dict[str, Any]:
    """One ``BYTES`` input: bytes base64-encoded (content type base64), or strings as they are."""
    items = array.reshape(-1).tolist()
    if all(isinstance(item, bytes | bytearray) for item in items):
        return {"name": name, "shape": list(array.shape), "datatype": "BYTES",
                "parameters": {"content_type": "base64"},
                "data": [base64.b64encode(item).decode("ascii") for item in items]}
    if all(isinstance(item, str) for item in items):
        return {"name": name, "shape": list(array.shape), "datatype": "BYTES", "data": items}
    raise ValueError(f"input {name!r}: BYTES elements must all be bytes or all be strings")


def decode_outputs(body: Mapping[str, Any]) -> dict[str, Array]:
    """The outputs of a JSON infer response as arrays.

    ``BYTES`` outputs become object arrays: of ``bytes`` when their ``parameters`` say
    ``content_type: base64`` (the reservoir's image rows), else of the strings sent (text).
    """
    import numpy as np

    outputs: dict[str, Array] = {}
    for item in body.get("outputs", []):
        datatype = str(item.get("datatype"))
        shape = [int(d) for d in item.get("shape", [])]
        if datatype == "BYTES":
            outputs[str(item["name"])] = _decode_bytes(item).reshape(shape)
            continue
        dtype = _DTYPES.get(datatype, "float32")
        outputs[str(item["name"])] = np.asarray(item.get("data", []), dtype=dtype).reshape(shape)
    return outputs


def _decode_bytes(item: Mapping[str, Any]) -> Array:
    import numpy as np

    data = item.get("data", [])
    if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
        raise ValueError(f"output {item.get('name')!r}: BYTES data must be a list of strings")
    parameters = item.get("parameters") or {}
    array = np.empty(len(data), dtype=np.object_)
    if isinstance(parameters, dict) and parameters.get("content_type") == "base64":
        try:
            array[:] = [base64.b64decode(v, validate=True) for v in data]
        except binascii.Error as exc:
            raise ValueError(f"output {item.get('name')!r}: not valid base64: {exc}") from None
    else:
        array[:] = data
    return array


class ServingClient:
    """Health, metadata, inference and metrics of one instance at ``base_url``.

    ``timeout`` is each request's total deadline in seconds (connect to last byte), not a
    per-read timeout: a server that trickles its answer cannot hold a caller longer.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._headers = dict(headers or {})
        self._batch_limits: dict[tuple[str, str | None], int] = {}

    def __repr__(self) -> str:
        return f"ServingClient({self.base_url!r})"

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: each request has its own connection."""

    # -- plumbing ------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """``method path`` (``body`` sent as JSON) within ``timeout`` (the client's by default)."""
        seconds = self.timeout if timeout is None else timeout
        sent = {**self._headers, **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            sent.setdefault("content-type", "application/json")
        url = self.base_url + path
        try:
            return request_within(method, url, seconds, body=data, headers=sent)
        except DeadlineError as exc:
            raise ServingError(f"{method} {url} timed out (no full answer within {seconds:g} s)") from exc
        except (OSError, HTTPException, ValueError) as exc:
            raise ServingError(f"{method} {url} failed: {exc}") from exc

    def _checked(
        self, method: str, path: str, *, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Answer:
        response = self._request(method, path, body=body, headers=headers)
        if response.status >= 400:
            raise ServingError(
                f"{method} {self.base_url}{path} answered {response.status}: "
                f"{_error_text(response)}",
                status=response.status,
            )
        return response

    def _health(self, path: str, timeout: float | None) -> Health:
        try:
            response = self._request("GET", path, timeout=timeout)
        except ServingError as exc:
            return Health(False, None, error=str(exc))
        detail = _json(response)
        ok = response.status == 200
        error = "" if ok else (_error_text(response) or f"status {response.status}")
        return Health(ok, response.status, detail, error)

    # -- API -----------------------------------------------------------------------------

    def live(self, timeout: float | None = 2.0) -> Health:
        """``GET /v2/health/live``."""
        return self._health("/v2/health/live", timeout)

    def ready(self, timeout: float | None = 2.0) -> Health:
        """``GET /v2/health/ready``."""
        return self._health("/v2/health/ready", timeout)

    def deep_health(self, timeout: float | None = 30.0) -> Health:
        """``GET /v2/health/deep``: a real inference on the manifest sample."""
        health = self._health("/v2/health/deep", timeout)
        if health.ok and health.detail.get("ok") is False:
            return Health(False, health.status, health.detail, str(health.detail.get("error")))
        return health

    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``."""
        return _json(self._checked("GET", "/v2"))

    def metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        """``GET /v2/models/{model}[/versions/{version}]``."""
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        return _json(self._checked("GET", path))

    def max_batch_size(self, model: str, version: str | None = None) -> int:
        """The rows one request may carry (Triton's ``max_batch_size``; 0: no limit known).

        Read once from ``/v2/models/{model}[/versions/{version}]/config`` and kept; a server
        without that endpoint is taken to have no limit.
        """
        key = (model, version)
        if key not in self._batch_limits:
            path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/config"
            try:
                response = self._request("GET", path)
            except ServingError:
                return 0  # not known now; asked again next time
            limit = _json(response).get("max_batch_size") if response.status == 200 else 0
            self._batch_limits[key] = int(limit) if isinstance(limit, int) and limit > 0 else 0
        return self._batch_limits[key]

    def infer(
        self,
        model: str,
        inputs: TensorsIn,
        *,
        version: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> InferResult:
        """``POST /v2/models/{model}/infer`` with JSON tensors; ``version`` pins one by URL.

        More rows than the model's ``max_batch_size`` go as several requests of at most that
        many rows (the server refuses larger ones, as Triton does); their outputs are joined.
        """
        limit = self.max_batch_size(model, version)
        rows = {len(value) for value in inputs.values() if getattr(value, "ndim", 0) >= 1}
        if limit and len(rows) == 1 and (total := rows.pop()) > limit:
            import numpy as np

            parts = [
                self._infer_once(model, {k: v[start : start + limit] for k, v in inputs.items()},
                                 version, headers)
                for start in range(0, total, limit)
            ]
            return InferResult(
                outputs={k: np.concatenate([p.outputs[k] for p in parts]) for k in parts[0].outputs},
                version=parts[-1].version,
                model=parts[-1].model,
                color=parts[-1].color,
                seconds=sum(p.seconds for p in parts),
            )
        return self._infer_once(model, inputs, version, headers)

    def _infer_once(
        self,
        model: str,
        inputs: TensorsIn,
        version: str | None,
        headers: Mapping[str, str] | None,
    ) -> InferResult:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        response = self._checked("POST", path, body=encode_inputs(inputs), headers=headers)
        body = _json(response)
        try:
            outputs = decode_outputs(body)
        except (KeyError, TypeError, ValueError) as exc:
            raise ServingError(f"malformed infer response from {self.base_url}: {exc}") from exc
        return InferResult(
            outputs=outputs,
            version=response.headers.get("x-model-version") or body.get("model_version"),
            model=body.get("model_name"),
            color=response.headers.get("x-deploy-color"),
            seconds=response.seconds,
        )

    def metrics_text(self) -> str:
        """``GET /metrics`` as Prometheus text."""
        return self._checked("GET", "/metrics").text

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """``GET /metrics`` parsed: sample name -> [(labels, value), ...]."""
        try:
            return parse_metrics(self.metrics_text())
        except ValueError as exc:
            raise ServingError(f"unparseable metrics from {self.base_url}: {exc}") from exc


def _json(response: Answer) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {"value": data}


def _error_text(response: Answer) -> str:
    data = _json(response)
    if "error" in data:
        return str(data["error"])
    return response.text.strip()[:500]
