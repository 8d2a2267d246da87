"""Every exception the serving layer raises on purpose is in the WorkbenchError tree,
and keeps the base class its callers catch."""

from __future__ import annotations

import pytest

from workbench.errors import WorkbenchError
from workbench.serving.batching import ClientGone, QueueFull
from workbench.serving.service import HealthCheckFailed


@pytest.mark.parametrize("error", [QueueFull("digits", 4), ClientGone("gone"), HealthCheckFailed("bad")])
def test_serving_errors_are_workbench_errors(error: Exception) -> None:
    assert isinstance(error, WorkbenchError)
    assert error.exit_code == 1  # type: ignore[attr-defined]


def test_queue_full_is_still_a_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="queue is full"):
        raise QueueFull("digits", 4)
