"""JSON-lines logs of a serving instance, each line tagged with the model version.

``workbench serve --log-format json`` (or ``WORKBENCH_LOG_FORMAT=json``, which the
deployment backends set) writes one JSON object per line::

    {"time": "2026-12-01T01:02:03.456Z", "level": "INFO", "logger": "workbench.serving.access",
     "message": "POST /v2/models/digits/infer 200", "model": "digits", "model_version": "1.1.0",
     "status": 200, "method": "POST", "path": "/v2/models/digits/infer", "duration_ms": 3.2}

``model_version`` is the version that answered for request lines, else the version
the instance was started with, so ``workbench deploy logs NAME --version V`` can pick
one version's lines out of both colours' logs.
"""

from __future__ import annotations

import json
import logging
import time

__all__ = ["FIELDS", "JsonFormatter"]

#: record attributes copied into the line when a log call passes them in ``extra``
FIELDS = ("model_version", "status", "method", "path", "duration_ms", "request_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with ``model`` and a default ``model_version``."""

    def __init__(self, model: str, model_version: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.model_version = model_version

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, object] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "model": self.model,
            "model_version": self.model_version,
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)
