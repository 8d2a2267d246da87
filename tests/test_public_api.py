from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import tomllib

import workbench

ROOT = Path(__file__).resolve().parent.parent


def test_all_is_sorted_and_exported() -> None:
    assert workbench.__all__ == sorted(workbench.__all__)
    for name in workbench.__all__:
        assert hasattr(workbench, name), name


def test_every_error_derives_from_workbench_error() -> None:
    from workbench import errors

    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert all(issubclass(c, errors.WorkbenchError) for c in classes)
    assert all(isinstance(c.exit_code, int) and c.exit_code > 0 for c in classes)


@pytest.mark.parametrize("front", ["workbench.deploy", "workbench.model", "workbench.runtime"])
def test_each_layer_front_offers_what_it_lists(front: str) -> None:
    module = importlib.import_module(front)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{front}.{name}"


def test_a_renamed_front_name_is_the_inner_object() -> None:
    import workbench.deploy
    import workbench.model
    from workbench.deploy import canary
    from workbench.model import demo

    assert workbench.deploy.canary_controller is canary.controller
    assert workbench.deploy.run_canary is canary.run
    assert workbench.model.DEMO_VERSIONS is demo.ALL


def test_the_extension_needs_no_exception_to_the_public_api_contract() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (public,) = [c for c in contracts if c["id"] == "extension-public-api"]
    assert public.get("ignore_imports", []) == []
