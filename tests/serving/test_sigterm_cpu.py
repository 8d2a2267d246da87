"""SIGTERM drains when Paddle is first imported after uvicorn started (``--device cpu``,
as deployments start their instances): Paddle's own signal handlers must not take over."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any

from tests.serving.conftest import json_infer_body, x_batch

if TYPE_CHECKING:
    from pathlib import Path


def test_sigterm_with_paddle_loaded_after_start_drains_and_exits_0(serve: Any, demo_repo: Path) -> None:
    server = serve(["--repo", str(demo_repo), "--model", "digits", "--device", "cpu"])
    with server.client() as client:
        for _ in range(3):
            assert client.post("/v2/models/digits/infer", json=json_infer_body(x_batch(2))).status_code == 200
    server.signal(signal.SIGTERM)
    assert server.wait(60) == 0
    log = server.log()
    assert "FatalError" not in log and "Termination signal" not in log
    assert "Shutting down" in log and "digits: stopped" in log
