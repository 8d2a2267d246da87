"""Routing tables and nginx.conf rendering (pure; no nginx needed).

Golden files live in tests/deploy/golden/; `UPDATE_GOLDEN=1 pytest ...` rewrites them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from workbench.deploy.nginx import NginxRouter
from workbench.deploy.platforms import get_runner
from workbench.deploy.platforms.process.router import LocalNginx
from workbench.deploy.router import NginxRunner, NopRouter, Router
from workbench.deploy.routing import RoutingTable, Upstream, render_front, render_nginx
from workbench.errors import DeployError, RouterError

GOLDEN = Path(__file__).parent / "golden"
WORKDIR = "/var/lib/workbench/router/digits"
BLUE = Upstream("blue", "127.0.0.1", 9001, "1.0.0")
GREEN = Upstream("green", "127.0.0.1", 9002, "1.1.0")
BLUE2 = Upstream("blue", "127.0.0.1", 9011, "1.0.0")
BLUE3 = Upstream("blue", "127.0.0.1", 9021, "1.0.0")
GREEN2 = Upstream("green", "127.0.0.1", 9012, "1.1.0")


def table(**overrides: Any) -> RoutingTable:
    args: dict[str, Any] = {
        "deployment": "digits",
        "listen_port": 8080,
        "upstreams": (BLUE, GREEN),
        "green_weight": 25,
    }
    args.update(overrides)
    return RoutingTable(**args)


GOLDEN_CASES: dict[str, tuple[RoutingTable, str | None]] = {
    "blue_only": (table(upstreams=(BLUE,), green_weight=0), None),
    "canary_25": (table(), None),
    "green_100_as_root": (table(green_weight=100), "root"),
    "custom_header_hostnames": (
        table(
            upstreams=(
                Upstream("green", "digits-green", 8000, "2.0.0+20260405"),
                Upstream("blue", "localhost", 8001, "1.0.0"),
            ),
            green_weight=5,
            user_header="X-Customer",
            listen_host="0.0.0.0",
            connect_timeout=0.5,
            read_timeout=30,
            max_body_mb=8,
        ),
        None,
    ),
    "same_version_ipv6": (
        table(
            upstreams=(
                Upstream("blue", "::1", 9001, "1.0.0"),
                Upstream("green", "::1", 9002, "1.0.0"),
            ),
            listen_host="::1",
            green_weight=50,
        ),
        None,
    ),
    "mirror_100": (table(green_weight=0, mirror_percent=100), None),
    "mirror_20_green_stable": (table(green_weight=10, stable="green", mirror_percent=20), None),
    # a colour spanning several instances (hosts)
    "fleet_3_blue_2_green": (table(upstreams=(BLUE, GREEN, BLUE2, GREEN2, BLUE3)), None),
    "fleet_2_green_stable_mirror": (
        table(
            upstreams=(
                Upstream("green", "10.77.0.2", 8000, "2.0.0"),
                Upstream("green", "10.77.0.3", 8000, "2.0.0"),
                Upstream("blue", "10.77.0.2", 8001, "1.9.0"),
                Upstream("blue", "10.77.0.3", 8001, "1.9.0"),
            ),
            stable="green",
            green_weight=95,
            mirror_percent=50,
            max_fails=1,
            fail_timeout=2,
        ),
        None,
    ),
    "fleet_blue_only": (table(upstreams=(BLUE, BLUE2), green_weight=0), None),
}


def check_golden(path: Path, rendered: str) -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(rendered, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with UPDATE_GOLDEN=1"
    assert rendered == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_render_matches_golden_file(name: str) -> None:
    routing, user = GOLDEN_CASES[name]
    check_golden(GOLDEN / f"{name}.conf", render_nginx(routing, workdir=WORKDIR, user=user))


@pytest.mark.parametrize("name", ["canary_25", "custom_header_hostnames", "green_100_as_root"])
def test_render_front_matches_golden_file(name: str) -> None:
    routing, user = GOLDEN_CASES[name]
    check_golden(GOLDEN / f"{name}.front.conf", render_front(routing, workdir=WORKDIR, user=user))


def test_render_is_pure() -> None:
    assert render_nginx(table(), workdir=WORKDIR) == render_nginx(table(), workdir=WORKDIR)
    assert render_nginx(table(), workdir=WORKDIR) != render_nginx(table(green_weight=26), workdir=WORKDIR)


def test_render_routing_rules() -> None:
    conf = render_nginx(table(), workdir=WORKDIR)
    # pins, sticky split with green first, retry to the other colour, served colour
    assert "map $http_x_deploy_color $wb_forced_color" in conf
    assert '"1.1.0" green;' in conf and '"1.0.0" blue;' in conf
    assert 'split_clients "1.1.0/${http_x_user_id}" $wb_user_split' in conf
    assert 'split_clients "${request_id}" $wb_random_split' in conf
    assert conf.index("25%     green;") < conf.index("*       blue;")
    assert "server 127.0.0.1:9002 max_fails=3 fail_timeout=10s backup;" in conf
    assert "error_page 500 502 503 504 = @wb_blue_final;" in conf
    assert r"~(^|\s)127\.0\.0\.1:9002$ green;" in conf
    assert "add_header x-deploy-color $wb_served_color always;" in conf
    assert f"pid {WORKDIR}/nginx.pid;" in conf and "daemon off;" in conf
    assert "\nuser " not in conf


def test_front_forwards_to_the_router_socket() -> None:
    socket = f"{WORKDIR}/front/router.sock"
    router = render_nginx(table(), workdir=WORKDIR)
    front = render_front(table(), workdir=WORKDIR)
    assert f"listen unix:{socket};" in router
    assert "listen 127.0.0.1:8080;" in front and f"server unix:{socket};" in front
    assert "proxy_next_upstream error non_idempotent;" in front
    assert f"pid {WORKDIR}/front/nginx.pid;" in front
    # the front changes only with the listen address, limits and timeouts
    other_upstreams = (BLUE, Upstream("green", "127.0.0.1", 9003, "1.2.0"))
    assert render_front(table(green_weight=80, upstreams=other_upstreams), workdir=WORKDIR) == front


def test_workdir_too_long_for_the_socket() -> None:
    with pytest.raises(RouterError, match="too long"):
        render_nginx(table(), workdir="/" + "x" * 100)


def test_blue_only_sends_everything_to_blue() -> None:
    conf = render_nginx(table(upstreams=(BLUE,), green_weight=0), workdir=WORKDIR)
    assert "wb_green" not in conf
    assert "green;" not in conf  # neither pinnable nor in any split
    assert " backup;" not in conf


def test_same_version_on_both_colours_is_not_pinnable() -> None:
    same = Upstream("green", "127.0.0.1", 9002, "1.0.0")
    conf = render_nginx(table(upstreams=(BLUE, same)), workdir=WORKDIR)
    assert '"1.0.0" blue;' not in conf and '"1.0.0" green;' not in conf


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"green_weight": 101}, "0..100"),
        ({"green_weight": -1}, "0..100"),
        ({"green_weight": 2.5}, "0..100"),
        ({"green_weight": True}, "0..100"),
        ({"upstreams": (BLUE,), "green_weight": 25}, "green gets 25% of traffic but has no upstream"),
        ({"upstreams": (GREEN,), "green_weight": 50}, "blue gets 50% of traffic but has no upstream"),
        ({"upstreams": ()}, "at least one upstream"),
        ({"upstreams": (BLUE, BLUE)}, "different addresses: 127.0.0.1:9001 twice"),
        ({"upstreams": (BLUE, Upstream("green", "127.0.0.1", 9001, "1.1.0"))}, "different"),
        (
            {"upstreams": (BLUE, GREEN, Upstream("blue", "127.0.0.1", 9011, "1.0.1"))},
            r"blue upstreams serve different versions \(1.0.0, 1.0.1\)",
        ),
        ({"max_fails": -1}, "max_fails"),
        ({"max_fails": 1.5}, "max_fails"),
        ({"fail_timeout": 0}, "fail_timeout"),
        ({"fail_timeout": True}, "fail_timeout"),
        ({"fail_timeout": 2.5}, "whole number of seconds"),
        ({"upstreams": ("127.0.0.1:9001",)}, "Upstream objects"),
        ({"listen_port": 9001}, "router's own address"),
        ({"listen_port": 0}, "listen port"),
        ({"listen_port": 65536}, "listen port"),
        ({"listen_host": "bad host"}, "listen host"),
        ({"deployment": "Digits"}, "deployment name"),
        ({"user_header": "x user"}, "user header"),
        ({"user_header": ""}, "user header"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"read_timeout": -1.0}, "read_timeout"),
        ({"max_body_mb": 0}, "max_body_mb"),
    ],
)
def test_invalid_tables_are_refused(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(RouterError, match=match):
        table(**overrides)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("red", "127.0.0.1", 9001, "1.0.0"), "color"),
        (("blue", "127.0.0.1", 0, "1.0.0"), "port"),
        (("blue", "127.0.0.1", "9001", "1.0.0"), "port"),
        (("blue", "host;evil", 9001, "1.0.0"), "upstream host"),
        (("blue", "127.0.0.1", 9001, "v1"), "version"),
        (("blue", "127.0.0.1", 9001, "default"), "version"),
        (("blue", "127.0.0.1", 9001, "1.0.0$x"), "version"),
    ],
)
def test_invalid_upstreams_are_refused(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(RouterError, match=match):
        Upstream(*args)


def test_router_errors_are_deploy_errors() -> None:
    assert issubclass(RouterError, DeployError)


def test_table_values() -> None:
    routing = table()
    assert routing.weights == {"blue": 75, "green": 25}
    assert routing.colors == ("blue", "green")
    assert routing.upstream("green") == GREEN
    assert routing.url == "http://127.0.0.1:8080"
    assert table(listen_host="0.0.0.0").url == "http://127.0.0.1:8080"
    assert table(listen_host="::1", upstreams=(BLUE,), green_weight=0).url == "http://[::1]:8080"
    assert str(routing) == (
        "RoutingTable(digits on 127.0.0.1:8080: blue 75% / green 25%; "
        "blue=127.0.0.1:9001@1.0.0, green=127.0.0.1:9002@1.1.0)"
    )


def test_upstreams_are_normalised_blue_first() -> None:
    assert table(upstreams=[GREEN, BLUE]).upstreams == (BLUE, GREEN)
    assert Upstream("blue", "::0001", 9001, "1.0.0").address == "[::1]:9001"


def test_round_trip_and_revision() -> None:
    routing = table()
    assert RoutingTable.from_dict(routing.to_dict()) == routing
    assert len(routing.revision) == 12
    assert routing.revision == table().revision
    assert routing.with_weight(50).revision != routing.revision
    assert routing.with_weight(50).green_weight == 50
    with pytest.raises(RouterError, match="invalid routing table"):
        RoutingTable.from_dict({"deployment": "digits"})


def test_render_refuses_unsafe_workdir_and_user() -> None:
    with pytest.raises(RouterError, match="absolute"):
        render_nginx(table(), workdir="relative/dir")
    with pytest.raises(RouterError, match="absolute"):
        render_nginx(table(), workdir="/tmp/with space")
    with pytest.raises(RouterError, match="user"):
        render_nginx(table(), workdir=WORKDIR, user="root; evil")


def test_local_nginx_is_a_runner() -> None:
    assert isinstance(LocalNginx(), NginxRunner)
    assert isinstance(get_runner("process"), LocalNginx)
    with pytest.raises(RouterError, match="unknown router runner 'k8s'"):
        get_runner("k8s")


def test_the_routers_follow_the_router_seam(tmp_path: Path) -> None:
    nop = NopRouter()
    assert isinstance(nop, Router)
    assert isinstance(NginxRouter(tmp_path), Router)
    assert not nop.running and nop.table is None
    nop.apply(table())
    assert nop.running and nop.table == table()
    nop.stop()
    assert not nop.running


def test_missing_nginx_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RouterError, match="could not run `nginx -t`"):
        LocalNginx(tmp_path / "no-nginx").check(tmp_path / "nginx.conf")


class RefusingRunner:
    """A runner whose `nginx -t` always fails and that records what else was asked."""

    worker_user = None

    def __init__(self) -> None:
        self.calls: list[str] = []

    def check(self, conf: Path) -> None:
        self.calls.append("check")
        raise RouterError(f'unknown directive "oops" in {conf}:3')

    def start(self, conf: Path) -> None:
        self.calls.append("start")

    def reload(self, conf: Path) -> None:
        self.calls.append("reload")

    def stop(self, conf: Path, timeout: float = 10.0) -> None:
        self.calls.append("stop")

    def is_running(self, conf: Path) -> bool:
        return False


def test_a_config_failing_the_check_is_never_installed(tmp_path: Path) -> None:
    runner = RefusingRunner()
    router = NginxRouter(tmp_path, runner)
    with pytest.raises(RouterError, match="oops") as info:
        router.apply(table())
    assert f"{tmp_path / 'nginx.conf'} (candidate):3" in str(info.value)  # not the temp name
    assert runner.calls == ["check"]
    assert not router.conf_path.exists()
    assert router.table is None
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".conf"] == []
    with pytest.raises(RouterError, match="no routing table applied"):
        _ = router.url
    with pytest.raises(RouterError, match="no routing table applied"):
        router.start()
    router.stop()  # nothing installed: a no-op
    assert runner.calls == ["check"]


def test_apply_wants_a_table(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        NginxRouter(tmp_path, RefusingRunner()).apply({"green_weight": 5})  # type: ignore[arg-type]


def test_mirror_and_retry_rules() -> None:
    plain = render_nginx(table(), workdir=WORKDIR)
    assert "mirror" not in plain
    # a candidate's 5xx is answered by stable (its backup); of stable's own 5xx only 503
    blue, green = plain.split("location @wb_blue {")[1].split("location @wb_green {")
    assert "proxy_next_upstream error timeout http_503 non_idempotent;" in blue
    assert "proxy_next_upstream error timeout non_idempotent;" in green
    assert "proxy_intercept_errors on;" in green
    assert "recursive_error_pages on;\n            error_page 418 = @wb_$wb_location;" in plain
    assert "error_page 500 502 503 504 = @wb_blue_final;" in green
    assert "error_page 5" not in blue
    swapped = render_nginx(table(stable="green"), workdir=WORKDIR).split("location @wb_green {")
    assert "= @wb_green_final;" in swapped[0].split("location @wb_blue {")[1]
    assert "error_page 5" not in swapped[1].split("location @wb_green_final {")[0]
    conf = render_nginx(table(green_weight=0, mirror_percent=30), workdir=WORKDIR)
    assert "mirror /_wb_mirror;" in conf and "mirror_request_body on;" in conf
    assert "30%     1;" in conf
    assert '"blue:1" 1;' in conf  # only requests routed to stable are copied
    assert "upstream wb_mirror {\n        least_conn;\n        server 127.0.0.1:9002 max_fails=0;\n" in conf
    assert "backup" not in conf.split("upstream wb_mirror")[1].split("}")[0]


def test_mirror_share_is_checked() -> None:
    with pytest.raises(RouterError, match="mirror_percent"):
        table(mirror_percent=101)
    with pytest.raises(RouterError, match="needs its upstream"):
        table(upstreams=(BLUE,), green_weight=0, mirror_percent=10)
    with pytest.raises(RouterError, match="stable"):
        table(stable="red")
    assert table().with_mirror(50).mirror_percent == 50
    assert table(stable="green").candidate == "blue"
    mirrored = table(mirror_percent=40)
    assert RoutingTable.from_dict(mirrored.to_dict()) == mirrored
    assert "stable" not in table().to_dict()  # older tables keep their revision
    assert "40% mirrored to green" in str(mirrored)


def test_a_colour_with_several_instances() -> None:
    routing = table(upstreams=(GREEN2, BLUE, GREEN, BLUE2))
    assert routing.upstreams == (BLUE, BLUE2, GREEN2, GREEN)  # colour first, given order within
    assert routing.servers("blue") == (BLUE, BLUE2) and routing.servers("green") == (GREEN2, GREEN)
    assert routing.upstream("green") == GREEN2 and routing.version("green") == "1.1.0"
    assert routing.colors == ("blue", "green")
    assert table(upstreams=(BLUE,), green_weight=0).version("green") is None
    assert RoutingTable.from_dict(routing.to_dict()) == routing
    assert "blue=127.0.0.1:9001,127.0.0.1:9011@1.0.0, green=127.0.0.1:9012,127.0.0.1:9002@1.1.0" in str(routing)
    conf = render_nginx(routing, workdir=WORKDIR)
    blue = conf.split("upstream wb_blue {")[1].split("}")[0]
    assert blue.split()[:1] == ["least_conn;"]
    assert "server 127.0.0.1:9001 max_fails=3 fail_timeout=10s;\n" in blue
    assert "server 127.0.0.1:9011 max_fails=3 fail_timeout=10s;\n" in blue
    assert "server 127.0.0.1:9012 max_fails=3 fail_timeout=10s backup;\n" in blue
    assert "keepalive 16;" in blue
    # every colour's version pins once; every instance reports its colour
    assert conf.count('"1.0.0" blue;') == 1 and conf.count('"1.1.0" green;') == 1
    assert r"~(^|\s)127\.0\.0\.1:9011$ blue;" in conf and r"~(^|\s)127\.0\.0\.1:9012$ green;" in conf
    assert conf.count("location @wb_green {") == 1
    # each of the colour's servers once, then one of the other colour
    assert "proxy_next_upstream_tries 3;" in conf.split("location @wb_blue {")[1]


def test_passive_health_is_configurable() -> None:
    conf = render_nginx(table(max_fails=0, fail_timeout=1), workdir=WORKDIR)
    assert "server 127.0.0.1:9001 max_fails=0 fail_timeout=1s;" in conf
    assert table().to_dict().keys() == table(max_fails=3, fail_timeout=10).to_dict().keys()
    assert "max_fails" not in table().to_dict()  # older tables keep their revision
    assert table(max_fails=1).revision != table().revision


def test_stable_503_is_retried_unless_pinned() -> None:
    conf = render_nginx(table(), workdir=WORKDIR)
    blue = conf.split("location @wb_blue {")[1].split("}")[0]
    pinned = conf.split("location @wb_blue_final {")[1].split("}")[0]
    assert "proxy_next_upstream error timeout http_503 non_idempotent;" in blue  # not http_500
    assert "proxy_pass http://wb_blue;" in blue
    # a pin keeps stable's 503, and its own upstream (unpinned 503s do not take it out)
    assert "proxy_next_upstream error timeout non_idempotent;" in pinned
    assert "proxy_pass http://wb_blue_final;" in pinned
    assert "upstream wb_blue_final {" in conf
    assert "~^blue:. blue_final;" in conf
    assert "error_page 418 = @wb_$wb_location;" in conf
    assert "proxy_next_upstream_timeout 122s;" in blue
    swapped = render_nginx(table(stable="green"), workdir=WORKDIR)
    assert "~^green:. green_final;" in swapped and "wb_blue_final" not in swapped
    # nothing to retry on: one instance and no other colour
    alone = render_nginx(table(upstreams=(BLUE,), green_weight=0), workdir=WORKDIR)
    assert "http_503" not in alone and "_final" not in alone
    # several stable instances and no other colour: 503 moves to a sibling
    fleet = render_nginx(table(upstreams=(BLUE, BLUE2), green_weight=0), workdir=WORKDIR)
    assert "http_503" in fleet and "_final" not in fleet


def test_instances_on_host_names_report_their_colour() -> None:
    hosts = (
        Upstream("blue", "gpu1", 8000, "1.0.0"),
        Upstream("blue", "gpu2", 8000, "1.0.0"),
        Upstream("green", "gpu1", 8001, "1.1.0"),
        Upstream("green", "gpu2", 8001, "1.1.0"),
    )
    conf = render_nginx(table(upstreams=hosts), workdir=WORKDIR)
    # one pattern per colour's port (nginx logs the resolved address)
    assert conf.count(r"~(^|\s)[^\s]*:8000$ blue;") == 1
    assert conf.count(r"~(^|\s)[^\s]*:8001$ green;") == 1
    # a port both colours use on host names cannot tell them apart: the routed colour
    shared = (*hosts[:2], Upstream("green", "gpu3", 8000, "1.1.0"))
    assert ":8000$" not in render_nginx(table(upstreams=shared), workdir=WORKDIR)
