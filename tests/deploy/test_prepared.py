"""The prepared rollback's bookkeeping, with a fake router (pure logic: files and calls).
The real switch, through nginx, is in ``test_cli_brake.py`` and ``test_canary_live.py``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from workbench.deploy import prepared
from workbench.deploy.routing import brake_file


@dataclass(frozen=True)
class Table:
    green: int

    @property
    def revision(self) -> str:
        return f"rev-{self.green}"

    @property
    def url(self) -> str:
        return "http://127.0.0.1:1"

    def to_dict(self) -> dict[str, int]:
        return {"green": self.green}


@dataclass
class Runner:
    checked: list[str] = field(default_factory=list)

    def check(self, conf: Path) -> None:
        self.checked.append(conf.read_text())


@dataclass
class Router:
    workdir: Path
    runner: Runner = field(default_factory=Runner)
    installed: list[tuple[str, str]] = field(default_factory=list)
    table: Table | None = field(default_factory=lambda: Table(10))  # the canary's step

    @property
    def conf_path(self) -> Path:
        return self.workdir / "nginx.conf"

    @property
    def lock_path(self) -> Path:
        return self.workdir / ".lock"

    def render(self, table: Table) -> str:
        return f"green {table.green}\n"

    def install_checked(self, checked: Path, table: Table) -> None:
        braked = (self.workdir / brake_file(self.table.revision)).exists() if self.table else False
        self.installed.append((checked.read_text(), table.revision))
        self.braked_before_install.append(braked)
        checked.replace(self.conf_path)
        self.table = table

    braked_before_install: list[bool] = field(default_factory=list)


def test_the_same_configuration_is_checked_once_and_kept_for_each_new_revision(tmp_path: Path) -> None:
    router = Router(tmp_path)
    lock = tmp_path / "state.json.lock"
    assert prepared.prepare(router, Table(0), 7, lock)  # type: ignore[arg-type]
    assert prepared.prepare(router, Table(0), -1, lock)  # type: ignore[arg-type]
    assert router.runner.checked == ["green 0\n"]  # nginx -t once
    kept = json.loads((tmp_path / prepared.PREPARED_FILE).read_text())
    assert (kept["state_revision"], kept["revision"]) == (-1, "rev-0")
    assert prepared.prepare(router, Table(100), 8, lock)  # type: ignore[arg-type]
    assert router.runner.checked == ["green 0\n", "green 100\n"]  # another text: checked


def test_switch_installs_only_the_configuration_made_for_that_table(tmp_path: Path) -> None:
    router = Router(tmp_path)
    prepared.prepare(router, Table(0), -1, tmp_path / "lock")  # type: ignore[arg-type]
    assert not prepared.switch(router, Table(100))  # type: ignore[arg-type]
    assert router.installed == [] and (tmp_path / prepared.PREPARED_FILE).exists()
    assert prepared.switch(router, Table(0))  # type: ignore[arg-type]
    assert router.installed == [("green 0\n", "rev-0")]
    assert not (tmp_path / prepared.PREPARED_FILE).exists()  # used up
    assert not prepared.switch(router, Table(0))  # type: ignore[arg-type]


def test_switch_refuses_a_kept_configuration_that_is_not_the_tables(tmp_path: Path) -> None:
    router = Router(tmp_path)
    prepared.prepare(router, Table(0), -1, tmp_path / "lock")  # type: ignore[arg-type]
    (tmp_path / prepared.PREPARED_CONF).write_text("green 50\n")  # changed since it was checked
    assert not prepared.switch(router, Table(0))  # type: ignore[arg-type]
    assert router.installed == []


def test_switch_pulls_the_running_configurations_brake_before_the_reload(tmp_path: Path) -> None:
    """Every request goes to stable from the moment the controller decides, not once the
    reload is done; a brake kept for a configuration no longer running is not pulled."""
    router = Router(tmp_path)
    prepared.prepare(router, Table(0), -1, tmp_path / "lock")  # type: ignore[arg-type]
    assert prepared.switch(router, Table(0))  # type: ignore[arg-type]
    assert router.braked_before_install == [True]

    router = Router(tmp_path / "moved")
    router.workdir.mkdir()
    prepared.prepare(router, Table(0), -1, tmp_path / "lock")  # type: ignore[arg-type]
    router.table = Table(20)  # the next step was installed after the rollback was kept
    assert prepared.switch(router, Table(0))  # type: ignore[arg-type]
    assert router.braked_before_install == [False]
    assert not (router.workdir / brake_file("rev-10")).exists()
