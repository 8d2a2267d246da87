from __future__ import annotations

import workbench


def test_all_is_sorted_and_exported() -> None:
    assert workbench.__all__ == sorted(workbench.__all__)
    for name in workbench.__all__:
        assert hasattr(workbench, name), name


def test_every_error_derives_from_workbench_error() -> None:
    from workbench import errors

    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert all(issubclass(c, errors.WorkbenchError) for c in classes)
    assert all(isinstance(c.exit_code, int) and c.exit_code > 0 for c in classes)
