"""A real IPython shell with the extension loaded, over the demo repository."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def shell(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``InteractiveShell`` with ``workbench_ext`` loaded; WORKBENCH_REPO is the demo repository."""
    from IPython.core.interactiveshell import InteractiveShell

    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_REPO", str(demo_repo))
        mp.setenv("WORKBENCH_HOME", str(home))
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "workbench_ext")
        from workbench.model.demo import digits_dataset

        _, _, x_test, y_test = digits_dataset()
        ip.user_ns.update(x_test=x_test[:120], y_test=y_test[:120])
        try:
            yield ip
        finally:
            ip.run_line_magic("unload_ext", "workbench_ext")


@pytest.fixture(scope="module")
def session(shell: Any) -> Any:
    import workbench_ext

    return workbench_ext.get_session(shell)
