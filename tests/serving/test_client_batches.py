"""The deploy side's client splits a request above the server's max_batch_size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.serving.conftest import ServeProcess, x_batch
from workbench.deploy.client import ServingClient
from workbench.errors import ServingError


@pytest.fixture(scope="module")
def server(serve: Any, demo_repo: Path) -> ServeProcess:
    return serve(["--repo", str(demo_repo), "--model", "digits", "--version", "1.0.0",
                  "--max-batch-size", "8", "--max-queue-delay-ms", "1"])


def test_more_rows_than_max_batch_size_go_as_several_requests(server: ServeProcess) -> None:
    x = x_batch(100, seed=3)
    with server.client() as raw:
        refused = raw.post("/v2/models/digits/infer", json={"inputs": [
            {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]})
    assert refused.status_code == 400  # the server keeps Triton's limit
    with ServingClient(server.url, timeout=60.0) as client:
        assert client.max_batch_size("digits") == 8
        whole = client.infer("digits", {"x": x})
        rows = [client.infer("digits", {"x": x[i : i + 1]}) for i in range(0, 100, 17)]
    (name,) = whole.outputs
    assert whole.outputs[name].shape[0] == 100
    assert whole.version == "1.0.0"
    for k, part in zip(range(0, 100, 17), rows, strict=True):
        np.testing.assert_allclose(whole.outputs[name][k], part.outputs[name][0], rtol=1e-5, atol=1e-6)


def test_an_unknown_model_still_fails_with_the_servers_answer(server: ServeProcess) -> None:
    with ServingClient(server.url) as client, pytest.raises(ServingError, match="404"):
        client.infer("nope", {"x": x_batch(20)})
