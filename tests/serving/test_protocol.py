"""Open Inference Protocol codecs: JSON and binary tensors, both directions, and every refusal."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workbench.errors import InputError
from workbench.serving.protocol import (
    PayloadTooLarge,
    ProtocolError,
    RequestedOutput,
    datatype_of,
    decode_infer_request,
    decompress,
    dtype_of,
    encode_infer_response,
    parse_header_length,
)


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


def binary_request(arrays: dict[str, np.ndarray], **extra: object) -> tuple[bytes, int]:
    """What tritonclient sends: a JSON header then the raw little-endian tensors."""
    inputs = []
    blobs = []
    for name, array in arrays.items():
        blob = array.astype(array.dtype.newbyteorder("<")).tobytes()
        inputs.append({
            "name": name,
            "datatype": datatype_of(array.dtype),
            "shape": list(array.shape),
            "parameters": {"binary_data_size": len(blob)},
        })
        blobs.append(blob)
    header = body({"inputs": inputs, **extra})
    return header + b"".join(blobs), len(header)


def test_datatype_mapping_round_trips() -> None:
    for name in ("BOOL", "UINT8", "INT32", "INT64", "FP16", "FP32", "FP64"):
        assert datatype_of(dtype_of(name)) == name
    assert datatype_of("float32") == "FP32"
    assert datatype_of(np.dtype(np.int64)) == "INT64"
    with pytest.raises(ProtocolError, match="unsupported datatype 'FP8'"):
        dtype_of("FP8")


def test_json_request_flat_and_nested() -> None:
    flat = decode_infer_request(body({
        "id": "r1",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}],
    }))
    nested = decode_infer_request(body({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3],
                    "data": [[1, 2, 3], [4, 5, 6]]}],
    }))
    assert flat.id == "r1"
    assert flat.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(flat.inputs["x"], nested.inputs["x"])
    assert flat.batch_size == 2
    assert flat.outputs is None and flat.binary_output is False


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        ("INT64", [1, 2], np.int64),
        ("INT32", [-5, 7], np.int32),
        ("UINT8", [0, 255], np.uint8),
        ("BOOL", [True, False], np.bool_),
        ("FP16", [0.5, 1.5], np.float16),
        ("FP64", [0.1, 2], np.float64),
    ],
)
def test_json_datatypes(datatype: str, data: list[object], dtype: type) -> None:
    decoded = decode_infer_request(body({
        "inputs": [{"name": "t", "datatype": datatype, "shape": [2], "data": data}],
    }))
    assert decoded.inputs["t"].dtype == np.dtype(dtype)
    assert decoded.inputs["t"].tolist() == np.asarray(data, dtype=dtype).tolist()


def test_json_bytes_tensor() -> None:
    decoded = decode_infer_request(body({
        "inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "data": ["héllo", "x"]}],
    }))
    assert decoded.inputs["s"].tolist() == ["héllo".encode(), b"x"]


def test_binary_request_matches_json() -> None:
    x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
    ids = np.arange(4, dtype=np.int64)
    raw, length = binary_request({"x": x, "ids": ids})
    decoded = decode_infer_request(raw, parse_header_length(str(length), len(raw)))
    np.testing.assert_array_equal(decoded.inputs["x"], x)
    np.testing.assert_array_equal(decoded.inputs["ids"], ids)
    assert decoded.inputs["x"].flags.c_contiguous


def test_binary_input_at_unaligned_offset_is_copied_aligned() -> None:
    x = np.arange(6, dtype=np.float64)
    blob = x.tobytes()
    header = body({"inputs": [{"name": "x", "datatype": "FP64", "shape": [6],
                               "parameters": {"binary_data_size": len(blob)}}]}) + b" "
    assert len(header) % 8  # the binary part starts misaligned
    decoded = decode_infer_request(header + blob, len(header))
    np.testing.assert_array_equal(decoded.inputs["x"], x)
    assert decoded.inputs["x"].ctypes.data % 8 == 0


def test_binary_bytes_tensor_is_length_prefixed() -> None:
    items = [b"ab", b"", b"xyz"]
    blob = b"".join(struct.pack("<I", len(i)) + i for i in items)
    header = body({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [3],
                               "parameters": {"binary_data_size": len(blob)}}]})
    decoded = decode_infer_request(header + blob, len(header))
    assert decoded.inputs["s"].tolist() == items


def test_mixed_json_and_binary_inputs() -> None:
    x = np.ones((1, 3), dtype=np.float32)
    blob = x.tobytes()
    header = body({"inputs": [
        {"name": "a", "datatype": "INT64", "shape": [1], "data": [7]},
        {"name": "x", "datatype": "FP32", "shape": [1, 3],
         "parameters": {"binary_data_size": len(blob)}},
    ]})
    decoded = decode_infer_request(header + blob, len(header))
    assert decoded.inputs["a"].tolist() == [7]
    np.testing.assert_array_equal(decoded.inputs["x"], x)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (body({}), "non-empty 'inputs'"),
        (body({"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}), "'name'"),
        (body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}),
         "non-negative"),
        (body({"inputs": [{"name": "x", "datatype": "FP32", "shape": "2", "data": [1]}]}),
         "'shape' list"),
        (body({"inputs": [{"name": "x", "datatype": "FLOAT", "shape": [1], "data": [1]}]}),
         "unsupported datatype"),
        (body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}),
         "neither 'data'"),
        (body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}]}),
         "needs 3 values, got 2"),
        (body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2],
                           "data": [[1, 2], [3]]}]}), "not a regular array"),
        (body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ["a"]}]}),
         "strings are not valid FP32"),
        (body({"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1.5]}]}),
         "floats are not valid INT64"),
        (body({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}]}),
         "do not fit UINT8"),
        (body({"inputs": [{"name": "x", "datatype": "BOOL", "shape": [1], "data": [1]}]}),
         "not valid BOOL"),
        (body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
                          {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}),
         "given twice"),
        (body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1] * 65, "data": [1]}]}),
         "65 dimensions"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": '
         + b"[" * 1100 + b"1" + b"]" * 1100 + b"}]}", "not valid JSON"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": '
         + b"[" * 100 + b"1" + b"]" * 100 + b"}]}", "not a regular array"),
        (body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
               "parameters": {"classification": 3}}), "classification"),
        (body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
               "outputs": [{"id": 1}]}), "outputs\\[0\\]"),
    ],
)
def test_malformed_requests_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        decode_infer_request(raw)
    assert isinstance(info.value, InputError)
    assert info.value.status == 400


def test_nan_and_infinity_are_accepted_by_default() -> None:
    """Triton accepts non-finite floats (perf_analyzer's random data holds them)."""
    raw = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [NaN, Infinity]}]}'
    x = decode_infer_request(raw).inputs["x"]
    assert np.isnan(x[0]) and np.isinf(x[1])
    binary, length = binary_request({"x": np.array([1.0, np.nan], dtype=np.float32)})
    assert np.isnan(decode_infer_request(binary, length).inputs["x"][1])


@pytest.mark.parametrize("data", [b"[1, NaN]", b"[Infinity, 1]"])
def test_nonfinite_refused_when_configured(data: bytes) -> None:
    raw = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": ' + data + b"}]}"
    with pytest.raises(ProtocolError, match="NaN or infinite"):
        decode_infer_request(raw, allow_nonfinite=False)


def test_binary_nan_is_refused_when_configured() -> None:
    raw, length = binary_request({"x": np.array([1.0, np.nan], dtype=np.float32)})
    with pytest.raises(ProtocolError, match="NaN"):
        decode_infer_request(raw, length, allow_nonfinite=False)


def test_binary_size_mismatches_are_refused() -> None:
    x = np.ones((2, 2), dtype=np.float32)
    raw, length = binary_request({"x": x})
    with pytest.raises(ProtocolError, match="only 8 remain"):
        decode_infer_request(raw[:-8], length)
    with pytest.raises(ProtocolError, match="belong to no input"):
        decode_infer_request(raw + b"extra", length)
    header = body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 2],
                               "parameters": {"binary_data_size": 16}}]})
    with pytest.raises(ProtocolError, match="needs 24 bytes, got 16"):
        decode_infer_request(header + x.tobytes(), len(header))


def test_header_length_is_checked() -> None:
    assert parse_header_length(None, 10) is None
    assert parse_header_length("4", 10) == 4
    for bad in ("x", "0", "11", "-1"):
        with pytest.raises(ProtocolError, match="Inference-Header-Content-Length"):
            parse_header_length(bad, 10)


def test_decompress_gzip_and_deflate_with_limit() -> None:
    raw = b"a" * 10_000
    assert decompress(gzip.compress(raw), "gzip", 20_000) == raw
    assert decompress(zlib.compress(raw), "deflate", 20_000) == raw
    assert decompress(raw, None, 20_000) is raw
    with pytest.raises(PayloadTooLarge) as info:
        decompress(gzip.compress(raw), "gzip", 5_000)  # a small bomb
    assert info.value.status == 413
    with pytest.raises(ProtocolError, match="not valid gzip"):
        decompress(b"plain", "gzip", 1000)
    with pytest.raises(ProtocolError, match="unsupported Content-Encoding") as unsupported:
        decompress(raw, "br", 20_000)
    assert unsupported.value.status == 415


def test_json_response() -> None:
    probs = np.array([[0.25, 0.75]], dtype=np.float32)
    content, length = encode_infer_response(
        model="digits", version="1.0.0", outputs={"probs": probs}, request_id="r1"
    )
    assert length is None
    doc = json.loads(content)
    assert doc == {
        "model_name": "digits",
        "model_version": "1.0.0",
        "id": "r1",
        "outputs": [{"name": "probs", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}],
    }


def test_binary_response_layout_matches_tritonclient() -> None:
    from tritonclient.http import InferResult

    probs = np.random.default_rng(1).random((3, 10), dtype=np.float32)
    labels = np.array([1, 2, 3], dtype=np.int64)
    content, length = encode_infer_response(
        model="digits",
        version="1.1.0",
        outputs={"probs": probs, "labels": labels},
        requested=[RequestedOutput("probs", True), RequestedOutput("labels", False)],
    )
    assert length is not None
    result = InferResult.from_response_body(content, header_length=length)
    np.testing.assert_array_equal(result.as_numpy("probs"), probs)
    np.testing.assert_array_equal(result.as_numpy("labels"), labels)
    assert result.get_response()["model_version"] == "1.1.0"


def test_binary_output_for_whole_request_and_bytes_outputs() -> None:
    from tritonclient.http import InferResult

    words = np.array([b"a", b"bc"], dtype=np.object_)
    content, length = encode_infer_response(
        model="m", version="1", outputs={"w": words}, binary_output=True
    )
    result = InferResult.from_response_body(content, header_length=length)
    assert result.as_numpy("w").tolist() == [b"a", b"bc"]


def test_unknown_requested_output_is_refused() -> None:
    with pytest.raises(ProtocolError, match="unknown output 'nope'"):
        encode_infer_response(model="m", version="1", outputs={"y": np.zeros(1)},
                              requested=[RequestedOutput("nope")])


def test_tritonclient_request_body_decodes() -> None:
    """The exact bytes tritonclient.http builds for a binary request decode here."""
    from tritonclient.http import InferInput, InferRequestedOutput
    from tritonclient.http._utils import _get_inference_request

    x = np.random.default_rng(2).random((2, 64), dtype=np.float32)
    tensor = InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    raw, length = _get_inference_request(
        inputs=[tensor], request_id="abc", outputs=[InferRequestedOutput("probs")],
        sequence_id=0, sequence_start=False, sequence_end=False, priority=0, timeout=None,
        custom_parameters=None,
    )
    decoded = decode_infer_request(raw, length)
    np.testing.assert_array_equal(decoded.inputs["x"], x)
    assert decoded.id == "abc"
    assert decoded.outputs == (RequestedOutput("probs", True),)


def test_an_unreadable_content_length_is_a_400_from_the_app_itself(demo_repo: Path) -> None:
    # uvicorn's parser refuses such a header before the app sees it; any other ASGI
    # server may pass it on, and the inference path must still answer in JSON
    import asyncio

    from workbench import ModelRepository, VersionHub
    from workbench.serving.app import create_app

    hub = VersionHub(ModelRepository(demo_repo), "digits", device="cpu", isolation="thread")
    hub.load("1.0.0")
    app = create_app(hub)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v2/models/digits/infer",
             "headers": [(b"content-length", b"two")], "query_string": b""}
    try:
        asyncio.run(app(scope, receive, send))
    finally:
        hub.close()
    assert sent[0]["status"] == 400
    assert b"invalid Content-Length 'two'" in sent[1]["body"]
