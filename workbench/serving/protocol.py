"""Open Inference Protocol (KServe v2) REST codecs: JSON tensors and the binary extension.

A request body is a JSON header, optionally followed by raw tensor bytes. When the
``Inference-Header-Content-Length`` header is present it gives the size of the JSON
part; each input carrying ``parameters.binary_data_size`` takes that many bytes from
the binary part, in the order the inputs appear. Responses mirror this: outputs asked
for in binary (``parameters.binary_data`` per output, or ``binary_data_output`` for the
whole request) are appended after the JSON header, whose size the response announces
in the same header. Triton's ``tritonclient.http`` and KServe's REST client speak this.

``BYTES`` elements travel as strings in JSON and length-prefixed (4-byte little-endian)
in binary. An input whose ``parameters.content_type`` is ``"base64"`` (MLServer's and
KServe's convention for binary payloads such as encoded images in JSON) carries its
elements base64-encoded; they are decoded here, so the rest of the server sees bytes.

Everything here is pure: bytes in, arrays out (and back). Every problem with a request
raises :class:`ProtocolError` (an :class:`~workbench.errors.InputError`) with a message
fit to return to the client.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from workbench.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from workbench._types import Array

HEADER_LENGTH = "inference-header-content-length"
MAX_JSON_DEPTH = 1024  # orjson's limit; the standard library's fallback may stop earlier
MAX_DIMS = 64  # numpy's limit on an array's dimensions

#: Open Inference Protocol datatype -> numpy dtype (BF16 has no numpy dtype).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_NAMES: dict[str, str] = {dtype.name: name for name, dtype in DATATYPES.items()}
_NAMES.update({"bytes": "BYTES", "str": "BYTES", "string": "BYTES", "bfloat16": "BF16"})
_LE = {name: dtype.newbyteorder("<") for name, dtype in DATATYPES.items() if name != "BYTES"}
# dtypes orjson writes straight from the array buffer (OPT_SERIALIZE_NUMPY)
_ORJSON_NUMPY = frozenset({
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
})
_ORJSON_DTYPES = frozenset(np.dtype(name) for name in _ORJSON_NUMPY)  # native byte order


def loads(raw: bytes | memoryview) -> Any:
    """Parse JSON with orjson; on failure retry with the standard library, which also
    reads the NaN and Infinity literals some clients send (so they get a clear message
    about non-finite values rather than a parse error)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            return json.loads(bytes(raw))
        except RecursionError:  # nesting deeper than Python's recursion limit
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None


def dumps(doc: Any) -> bytes:
    """Compact JSON; numpy arrays are written directly from their buffers."""
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


class ProtocolError(InputError):
    """A request does not follow the Open Inference Protocol; ``status`` is the HTTP code."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[object, tuple[str, int]]:  # crosses process boundaries
        return _protocol_error, (str(self), self.status)


def _protocol_error(message: str, status: int) -> ProtocolError:
    return ProtocolError(message, status=status)


class PayloadTooLarge(ProtocolError):
    """The request body (or its decompressed form) exceeds the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes", status=413)
        self.limit = limit


_BY_DTYPE: dict[object, str] = {}  # dtype objects seen -> datatype (``.name`` is slow)


def datatype_of(dtype: str | np.dtype[Any]) -> str:
    """The protocol datatype for a numpy dtype (or dtype name), e.g. ``float32`` -> ``FP32``."""
    if not isinstance(dtype, str):
        known = _BY_DTYPE.get(dtype)
        if known is not None:
            return known
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    try:
        datatype = _NAMES[name]
        if not isinstance(dtype, str) and len(_BY_DTYPE) < 64:
            _BY_DTYPE[dtype] = datatype
        return datatype
    except KeyError:
        raise ValueError(f"no Open Inference Protocol datatype for numpy dtype {name!r}") from None


def dtype_of(datatype: object) -> np.dtype[Any]:
    """The numpy dtype for a protocol datatype; raises ProtocolError for unknown ones."""
    try:
        return DATATYPES[datatype]  # type: ignore[index]
    except (KeyError, TypeError):
        known = ", ".join(DATATYPES)
        raise ProtocolError(f"unsupported datatype {datatype!r} (supported: {known})") from None


@dataclass(frozen=True)
class RequestedOutput:
    """One entry of a request's ``outputs``: a name and whether to send it in binary."""

    name: str
    binary: bool | None = None  # None: follow the request's binary_data_output


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request."""

    inputs: Mapping[str, Array]
    id: str | None = None
    outputs: tuple[RequestedOutput, ...] | None = None  # None: every output
    binary_output: bool = False
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        """Rows along the first axis of the first input (1 for scalars)."""
        for array in self.inputs.values():
            return int(array.shape[0]) if array.ndim else 1
        return 0


# -- request body -------------------------------------------------------------------------


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo a request's ``Content-Encoding`` (gzip or deflate), refusing to grow past ``limit``."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    kind = encoding.strip().lower()
    if kind == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif kind == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise ProtocolError(f"unsupported Content-Encoding {encoding!r} (use gzip or deflate)",
                            status=415)
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"request body is not valid {kind} data: {exc}") from exc
    if len(out) > limit:
        raise PayloadTooLarge(limit)
    if not inflater.eof:
        raise ProtocolError(f"request body is truncated {kind} data")
    return out


def parse_header_length(value: str | None, body_size: int) -> int | None:
    """Validate the ``Inference-Header-Content-Length`` header against the body size."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise ProtocolError(
            f"Inference-Header-Content-Length must be an integer, not {value!r}"
        ) from None
    if not 0 < length <= body_size:
        raise ProtocolError(
            f"Inference-Header-Content-Length {length} is outside the body's {body_size} bytes"
        )
    return length


def decode_infer_request(
    body: bytes, header_length: int | None = None, *, allow_nonfinite: bool = True
) -> InferRequest:
    """Decode an inference request body (JSON, or JSON header + binary tensors).

    NaN and infinity are valid floating-point data (Triton accepts them; perf_analyzer's
    random data holds them); ``allow_nonfinite=False`` refuses them.
    """
    header = body if header_length is None else body[:header_length]
    reuse = header_length is not None and isinstance(header, bytes)
    plan = _PLANS.get(header) if reuse else None
    if plan is None:
        plan = _plan(header)
        if reuse and plan.reusable and len(header) <= _PLAN_HEADER_MAX:
            if len(_PLANS) >= _PLANS_MAX:
                _PLANS.clear()
            _PLANS[header] = plan
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    offset = 0
    inputs: dict[str, Array] = {}
    for name, datatype, shape, size, array in plan.inputs:
        if array is None:
            if offset + size > len(binary):
                raise ProtocolError(
                    f"input {name!r} declares {size} binary bytes but only "
                    f"{len(binary) - offset} remain in the body"
                )
            array = _from_binary(binary[offset : offset + size], datatype, shape, name)
            offset += size
        if name in plan.base64:
            array = _from_base64(array, name)
        if not allow_nonfinite and array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ProtocolError(f"input {name!r} contains NaN or infinite values")
        inputs[name] = array
    if offset != len(binary):
        raise ProtocolError(
            f"{len(binary) - offset} bytes after the JSON header belong to no input"
        )
    return InferRequest(inputs, plan.id, plan.outputs, plan.binary_output, plan.parameters)


@dataclass(frozen=True)
class _Plan:
    """What a request's JSON header says, checked: each input as (name, datatype, shape,
    binary size, array or None), and the rest of the request. A header whose tensors are
    all binary and that carries no ``id`` is the same for every request a client sends,
    so its plan is kept (:data:`_PLANS`) and the next identical header skips the parse."""

    inputs: tuple[tuple[str, str, tuple[int, ...], int, Array | None], ...]
    id: str | None
    outputs: tuple[RequestedOutput, ...] | None
    binary_output: bool
    parameters: Mapping[str, Any]
    base64: frozenset[str] = frozenset()  # BYTES inputs whose elements are base64 text

    @property
    def reusable(self) -> bool:
        return self.id is None and all(array is None for *_, array in self.inputs)


_PLANS: dict[bytes, _Plan] = {}  # JSON header bytes -> its plan (binary requests only)
_PLANS_MAX = 256
_PLAN_HEADER_MAX = 4096


def _plan(header: bytes) -> _Plan:
    try:
        doc = loads(header)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ProtocolError("request body must be a JSON object with an 'inputs' list")
    params = _parameters(doc, "request")
    if "classification" in params:
        raise ProtocolError("the classification extension is not supported")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("request must have a non-empty 'inputs' list")
    inputs: list[tuple[str, str, tuple[int, ...], int, Array | None]] = []
    names: set[str] = set()
    encoded: set[str] = set()
    for index, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            raise ProtocolError(f"inputs[{index}] must be an object")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"inputs[{index}] needs a 'name' string")
        if name in names:
            raise ProtocolError(f"input {name!r} is given twice")
        names.add(name)
        shape = _shape(raw.get("shape"), name)
        dtype = dtype_of(raw.get("datatype"))
        input_params = _parameters(raw, f"input {name!r}")
        if input_params.get("content_type") == "base64":
            if raw["datatype"] != "BYTES":
                raise ProtocolError(f"input {name!r}: content_type base64 needs datatype BYTES")
            encoded.add(name)
        size = _binary_size(input_params, name)
        if size is not None:
            if "data" in raw:
                raise ProtocolError(f"input {name!r} has both 'data' and binary_data_size")
            inputs.append((name, raw["datatype"], shape, size, None))
        else:
            if "data" not in raw:
                raise ProtocolError(f"input {name!r} has neither 'data' nor binary_data_size")
            array = _from_json(raw["data"], raw["datatype"], dtype, shape, name)
            inputs.append((name, raw["datatype"], shape, 0, array))
    outputs = _requested_outputs(doc.get("outputs"))
    binary_output = params.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise ProtocolError("parameter binary_data_output must be true or false")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    return _Plan(tuple(inputs), request_id, outputs, binary_output, params, frozenset(encoded))


def _parameters(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ProtocolError(f"{where}: 'parameters' must be an object")
    return params


def _shape(value: object, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise ProtocolError(f"input {name!r} needs a 'shape' list of non-negative integers")
    if len(value) > MAX_DIMS:
        raise ProtocolError(
            f"input {name!r} has {len(value)} dimensions; at most {MAX_DIMS} are supported"
        )
    return tuple(value)


def _binary_size(params: Mapping[str, Any], name: str) -> int | None:
    size = params.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(f"input {name!r}: binary_data_size must be a non-negative integer")
    return size


def _from_binary(raw: memoryview, datatype: str, shape: tuple[int, ...], name: str) -> Array:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _unpack_bytes(raw, count, name).reshape(shape)
    dtype = _LE[datatype]
    if len(raw) != count * dtype.itemsize:
        raise ProtocolError(
            f"input {name!r}: shape {list(shape)} of {datatype} needs "
            f"{count * dtype.itemsize} bytes, got {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and array.size and array.view(np.uint8).max() > 1:
        raise ProtocolError(f"input {name!r}: BOOL bytes must be 0 or 1")
    if not (dtype.isnative and array.flags.aligned):
        array = array.astype(dtype.newbyteorder("="))  # aligned, native copy
    return array.reshape(shape)


def _unpack_bytes(raw: memoryview, count: int, name: str) -> Array:
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ProtocolError(f"input {name!r}: truncated BYTES length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ProtocolError(f"input {name!r}: BYTES element overruns its data")
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise ProtocolError(f"input {name!r}: shape needs {count} BYTES elements, got {len(items)}")
    array = np.empty(count, dtype=np.object_)
    array[:] = items
    return array


def _from_base64(array: Array, name: str) -> Array:
    out = np.empty(array.shape, dtype=np.object_)
    flat = out.reshape(-1)
    for index, item in enumerate(array.reshape(-1).tolist()):
        try:
            flat[index] = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(
                f"input {name!r}: element {index} is not valid base64 (content_type is base64)"
            ) from None
    return out


def _from_json(
    data: object, datatype: str, dtype: np.dtype[Any], shape: tuple[int, ...], name: str
) -> Array:
    if not isinstance(data, list):
        data = [data]
    count = math.prod(shape)
    if datatype == "BYTES":
        flat = _flatten(data)
        if not all(isinstance(item, str | bytes) for item in flat):
            raise ProtocolError(f"input {name!r}: BYTES data must be strings")
        array: Array = np.empty(len(flat), dtype=np.object_)
        array[:] = [item.encode() if isinstance(item, str) else item for item in flat]
    else:
        try:
            array = np.asarray(data)
        except ValueError as exc:
            raise ProtocolError(f"input {name!r}: data is not a regular array: {exc}") from exc
        array = _cast(array, datatype, dtype, name)
    if array.size != count:
        raise ProtocolError(
            f"input {name!r}: shape {list(shape)} needs {count} values, got {array.size}"
        )
    return array.reshape(shape)


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _cast(array: Array, datatype: str, dtype: np.dtype[Any], name: str) -> Array:
    kind = array.dtype.kind
    if array.size == 0:
        return array.astype(dtype)
    if dtype.kind == "f":
        ok = kind in "iuf"
    elif dtype.kind in "iu":
        ok = kind in "iu"
        if ok:
            info = np.iinfo(dtype)
            low, high = array.min(), array.max()
            if low < info.min or high > info.max:
                raise ProtocolError(
                    f"input {name!r}: values {low}..{high} do not fit {datatype}"
                )
    else:  # bool
        ok = kind == "b"
    if not ok:
        got = {"b": "booleans", "U": "strings", "S": "strings", "f": "floats", "O": "mixed values"}
        raise ProtocolError(
            f"input {name!r}: {got.get(kind, array.dtype.name)} are not valid {datatype} data"
        )
    return array.astype(dtype, copy=False)


def _requested_outputs(value: object) -> tuple[RequestedOutput, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ProtocolError("'outputs' must be a list")
    outputs = []
    for index, raw in enumerate(value):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ProtocolError(f"outputs[{index}] needs a 'name' string")
        params = _parameters(raw, f"output {raw['name']!r}")
        if "classification" in params:
            raise ProtocolError("the classification extension is not supported")
        flag = params.get("binary_data")
        if flag is not None and not isinstance(flag, bool):
            raise ProtocolError(f"output {raw['name']!r}: binary_data must be true or false")
        outputs.append(RequestedOutput(raw["name"], flag))
    return tuple(outputs)


# -- response body ------------------------------------------------------------------------


def encode_infer_response(
    *,
    model: str,
    version: str,
    outputs: Mapping[str, Array],
    request_id: str | None = None,
    requested: Sequence[RequestedOutput] | None = None,
    binary_output: bool = False,
) -> tuple[bytes, int | None]:
    """Encode an inference response; returns the body and the JSON header length.

    The header length is None when the body is pure JSON (no binary outputs).
    """
    if requested is None:
        requested = [RequestedOutput(name) for name in outputs]
    else:
        unknown = [r.name for r in requested if r.name not in outputs]
        if unknown:
            raise ProtocolError(
                f"unknown output {unknown[0]!r}; the model has {sorted(outputs)}"
            )
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for want in requested:
        array = np.asarray(outputs[want.name])
        entry: dict[str, Any] = {
            "name": want.name,
            "datatype": datatype_of(array.dtype if array.dtype.kind != "U" else "str"),
            "shape": list(array.shape),
        }
        binary = binary_output if want.binary is None else want.binary
        if binary:
            blob = _to_binary(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _to_json(array)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = entries
    header = dumps(doc)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _to_binary(array: Array) -> bytes:
    if array.dtype.kind in "OSU":
        parts = []
        for item in array.ravel():
            raw = item.encode() if isinstance(item, str) else bytes(item)  # type: ignore[call-overload]
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _to_json(array: Array) -> Any:
    if array.dtype.kind in "OSU":
        return [
            item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            for item in array.ravel()
        ]
    if array.dtype in _ORJSON_DTYPES or array.dtype.name in _ORJSON_NUMPY:
        if array.dtype.isnative and array.flags.c_contiguous:
            return array.ravel()
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("=")).ravel()
    return array.ravel().tolist()


def error_body(message: str) -> bytes:
    """The protocol's error document, ``{"error": message}``."""
    return dumps({"error": message})
