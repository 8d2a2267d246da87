"""Docker hosts made of Linux network namespaces, for the fleet test.

Each :class:`NetnsHost` is a network namespace joined to a bridge in the root namespace
by a veth pair, with an address in ``10.231.7.0/24`` (which exists only on that bridge
and inside these namespaces), running its own sshd (key only, a throwaway key) and its
own private dockerd (entered with ``nsenter --net``, so it keeps this machine's mounts
and cgroups; ``ip netns exec`` would remount /sys and hide them). Containers with host
networking share the host's namespace, so a serving instance binds the host's address
and the router in the root namespace reaches it over the bridge, as it would reach
another machine. The engines are reached as ``ssh://root@10.231.7.X``.

Each host's engine keeps its data root in the CI cache, so the workbench image (loaded
from one ``docker save`` of the test image, cached by image id) is loaded once per image
build, not once per run. :meth:`HostFleet.close` tears everything down, also after a
failure, and :meth:`HostFleet.open` first removes what a killed run left.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.docker.conftest import accepts, sshd_config

log = logging.getLogger(__name__)

SUBNET = "10.231.7"
BRIDGE = "wbfleet0"
PREFIX = "wbfleet"
RUN = Path("/run/workbench-fleet")
CACHE = Path(os.environ.get("WORKBENCH_CI_CACHE", "/var/cache/workbench-ci")) / "fleet"
TOOLS = ("ip", "nsenter", "dockerd", "docker", "ssh-keygen")


def sh(*argv: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=600, **kwargs)


def sshd_binary() -> str:
    return shutil.which("sshd") or "/usr/sbin/sshd"


def missing_tools() -> list[str]:
    """The tools this needs that are not installed (empty when all are)."""
    missing = [t for t in TOOLS if not shutil.which(t)]
    if not Path(sshd_binary()).exists():
        missing.append("sshd")
    return missing


def netns_works() -> str:
    """Why network namespaces cannot be made here ("" when they can)."""
    if os.geteuid() != 0:
        return "needs root"
    probe = f"{PREFIX}-probe{os.getpid()}"
    result = sh("ip", "netns", "add", probe, check=False)
    sh("ip", "netns", "del", probe, check=False)
    return "" if result.returncode == 0 else result.stderr.strip()


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


@dataclass
class NetnsHost:
    """One host: a namespace, an address, an sshd and a dockerd."""

    index: int
    keys: Path  # the fleet's key directory (client key, known_hosts)
    dockerd: subprocess.Popen[bytes] | None = None
    sshd: subprocess.Popen[bytes] | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{PREFIX}-h{self.index}"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{10 + self.index}"

    @property
    def url(self) -> str:
        return f"ssh://root@{self.address}"

    @property
    def run_dir(self) -> Path:
        return RUN / self.name

    @property
    def socket(self) -> str:
        return f"unix://{self.run_dir / 'docker.sock'}"

    def nsenter(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.name}", *argv]

    def _log(self, name: str) -> IO[bytes]:
        handle = (self.run_dir / name).open("ab")
        self._logs.append(handle)
        return handle

    # -- bring up ------------------------------------------------------------------------

    def make_network(self) -> None:
        outside, inside = f"{self.name}r", f"{self.name}n"
        sh("ip", "netns", "add", self.name)
        sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        sh("ip", "link", "set", outside, "master", BRIDGE, "up")
        sh("ip", "link", "set", inside, "netns", self.name)
        for argv in (("addr", "add", f"{self.address}/24", "dev", inside),
                     ("link", "set", inside, "up"), ("link", "set", "lo", "up")):
            sh("ip", "-n", self.name, *argv)

    def start_dockerd(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        data = CACHE / f"h{self.index}"
        data.mkdir(parents=True, exist_ok=True)
        self.dockerd = subprocess.Popen(
            self.nsenter(
                "dockerd", "--data-root", str(data / "docker"),
                "--exec-root", str(self.run_dir / "exec"),
                "--pidfile", str(self.run_dir / "docker.pid"),
                "--host", self.socket,
                "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
                "--log-level=warn",
            ),
            stdout=self._log("dockerd.log"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def docker(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("docker", "--host", self.socket, *argv, check=check)

    def wait_dockerd(self) -> None:
        def up() -> bool:
            if self.dockerd is not None and self.dockerd.poll() is not None:
                log_text = (self.run_dir / "dockerd.log").read_text()[-2000:]
                raise RuntimeError(f"dockerd of {self.name} exited:\n{log_text}")
            return self.docker("version", check=False).returncode == 0

        _wait(up, 60, f"dockerd of {self.name}")
        # what a killed run left (the data root is kept between runs for its image)
        ids = self.docker("ps", "-aq").stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)

    def load_image(self, image: str, image_id: str, tarball: Path) -> float:
        """Load ``image`` unless this engine has it already; the seconds it took."""
        if self.docker("image", "inspect", "--format", "{{.Id}}", image,
                       check=False).stdout.strip() == image_id:
            return 0.0
        started = time.monotonic()
        self.docker("load", "--input", str(tarball))
        self.docker("image", "prune", "--force", check=False)  # earlier builds of it
        return time.monotonic() - started

    def start_sshd(self) -> None:
        d = self.run_dir
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")],
                       check=True, stdin=subprocess.DEVNULL)
        (d / "sshd_config").write_text(
            sshd_config(self.address, 22, d, self.keys / "client_key.pub", self.socket)
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        self.sshd = subprocess.Popen(
            self.nsenter(sshd_binary(), "-D", "-e", "-f", str(d / "sshd_config")),
            stdout=self._log("sshd.log"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait(lambda: self.sshd is None or self.sshd.poll() is not None
              or accepts(self.address, 22), 15, f"sshd of {self.name}")
        if self.sshd.poll() is not None:
            raise RuntimeError(f"sshd of {self.name} exited: {(d / 'sshd.log').read_text()}")
        key_type, key = (d / "host_key.pub").read_text().split()[:2]
        with (self.keys / "known_hosts").open("a") as known:
            known.write(f"{self.address} {key_type} {key}\n")

    # -- tear down -----------------------------------------------------------------------

    def stop_dockerd(self, timeout: float = 30.0) -> None:
        """Stop the engine as a host's shutdown would (SIGTERM: it stops its containers)."""
        proc, self.dockerd = self.dockerd, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def close(self) -> None:
        if self.sshd is not None:
            self.sshd.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sshd.wait(10)
            if self.sshd.poll() is None:
                self.sshd.kill()
        self.stop_dockerd()
        for handle in self._logs:
            handle.close()
        remove_host(self.name)


def _kill_pidfile(path: Path) -> None:
    """Stop the daemon of a pid file left by an earlier run (if that pid is still ours)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(path.read_text().strip())
        if str(path.parent).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return  # the pid was reused by something else
        os.kill(pid, signal.SIGTERM)
        for _ in range(150):
            os.kill(pid, 0)
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)


def _kill_namespace(name: str) -> None:
    """Kill what still runs in namespace ``name`` (e.g. sshd's per-connection children,
    which outlive their listener while a client keeps its connection open)."""
    pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def remove_host(name: str) -> None:
    """Remove host ``name``'s daemons (by their pid files), processes, mounts, veth and
    namespace."""
    run_dir = RUN / name
    for pidfile in ("sshd.pid", "docker.pid"):
        _kill_pidfile(run_dir / pidfile)
    _kill_namespace(name)
    with contextlib.suppress(OSError):
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(f"{run_dir}/")), reverse=True):
            sh("umount", "-l", mount, check=False)
    sh("ip", "link", "del", f"{name}r", check=False)
    sh("ip", "netns", "del", name, check=False)
    shutil.rmtree(run_dir, ignore_errors=True)


@dataclass
class HostFleet:
    """``count`` namespace hosts on one bridge; ``open`` brings them up, ``close`` removes all."""

    count: int
    keys: Path
    hosts: list[NetnsHost] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    _lock: IO[bytes] | None = None

    @property
    def identity_file(self) -> Path:
        return self.keys / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.keys / "known_hosts"

    def open(self, image: str, main_engine: str) -> HostFleet:
        RUN.mkdir(parents=True, exist_ok=True)
        self._lock = (RUN / "lock").open("wb")  # one fleet at a time: the names are fixed
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._cleanup()
        started = time.monotonic()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.identity_file)],
                       check=True, stdin=subprocess.DEVNULL)
        self.known_hosts.write_text("")
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        self.hosts = [NetnsHost(k + 1, self.keys) for k in range(self.count)]
        for host in self.hosts:
            host.make_network()
            host.start_dockerd()
        for host in self.hosts:
            host.wait_dockerd()
            host.start_sshd()
        self.timings["hosts up"] = time.monotonic() - started
        self._load(image, main_engine)
        self.timings["total"] = time.monotonic() - started
        return self

    def _load(self, image: str, main_engine: str) -> None:
        image_id = sh("docker", "--host", main_engine, "image", "inspect", "--format", "{{.Id}}",
                      image).stdout.strip()
        tarball = CACHE / f"image-{image_id.removeprefix('sha256:')[:16]}.tar"
        if not tarball.exists() and any(
            h.docker("image", "inspect", "--format", "{{.Id}}", image, check=False)
            .stdout.strip() != image_id for h in self.hosts
        ):
            started = time.monotonic()
            for old in CACHE.glob("image-*.tar"):
                old.unlink()
            sh("docker", "--host", main_engine, "save", "--output", f"{tarball}.tmp", image)
            os.replace(f"{tarball}.tmp", tarball)
            self.timings["docker save"] = time.monotonic() - started
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            took = list(pool.map(lambda h: h.load_image(image, image_id, tarball), self.hosts))
        self.timings["docker load (each, parallel)"] = max(took)

    def _cleanup(self) -> None:
        for path in sorted(RUN.glob(f"{PREFIX}-h*")):
            remove_host(path.name)
        for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith(f"{PREFIX}-h"):
                sh("ip", "link", "del", name, check=False)
        for name in sh("ip", "netns", "list", check=False).stdout.split():
            if name.startswith(f"{PREFIX}-h"):
                sh("ip", "netns", "del", name, check=False)
        sh("ip", "link", "del", BRIDGE, check=False)

    def close(self) -> None:
        errors = []
        for host in self.hosts:
            try:
                host.close()
            except Exception as exc:  # tear down the others all the same
                errors.append(exc)
        self._cleanup()
        if self._lock is not None:
            self._lock.close()
        if errors:
            raise errors[0]
