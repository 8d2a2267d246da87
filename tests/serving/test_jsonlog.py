"""Version-tagged JSON-lines logs of a real ``workbench serve``."""

from __future__ import annotations

import json
from pathlib import Path

from tests._wait import wait_until
from tests.serving.conftest import ServeProcess, json_infer_body, x_batch


def test_json_log_lines_carry_the_model_version(serve, demo_repo: Path) -> None:  # type: ignore[no-untyped-def]
    server: ServeProcess = serve(
        ["--repo", str(demo_repo), "--model", "digits", "--version", "1.0.0", "--load", "1.1.0"],
        env={"WORKBENCH_LOG_FORMAT": "json"},
    )
    body = json_infer_body(x_batch(1))
    with server.client() as client:
        assert client.post("/v2/models/digits/infer", json=body).status_code == 200
        assert client.post("/v2/models/digits/versions/1.1.0/infer", json=body).status_code == 200

    def access_lines() -> list[dict[str, object]]:
        docs = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        return [d for d in docs if d["logger"] == "workbench.serving.access"]

    lines = wait_until(lambda: len(access_lines()) == 2 and access_lines(), 10,
                       what="two access lines")
    assert [(d["model_version"], d["status"], d["method"]) for d in lines] == [
        ("1.0.0", 200, "POST"), ("1.1.0", 200, "POST")
    ]
    assert all(d["model"] == "digits" and float(d["duration_ms"]) > 0 for d in lines)  # type: ignore[arg-type]
    startup = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(d["logger"] != "workbench.serving.access" and d["model_version"] == "1.0.0"
               for d in startup)  # instance lines carry the version it was started with
