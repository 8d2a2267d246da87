"""A test kubelet for the API emulator: one real stub serving process per ready colour.

After every write the emulator calls :meth:`StubKubelet.sync`, which makes the processes
match the objects: for each Deployment that is available with replicas and a NodePort
Service selecting it, the stub ``workbench serve`` (tests/deploy/conftest.py) runs the
version in the Deployment's container args on 127.0.0.1:<nodePort>; anything else is
stopped. With ``node_address=127.0.0.1`` the Kubernetes backend then reaches colours the
way it reaches NodePorts of a real cluster, and the whole deploy flow (verification over
HTTP included) runs here.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.deploy.platforms.kubernetes.emulator import Emulator


class StubKubelet:
    def __init__(self, command: list[str], repo: str, env: dict[str, str]) -> None:
        self.command = command
        self.repo = repo
        self.env = env
        self.running: dict[str, tuple[tuple[str, ...], subprocess.Popen[bytes]]] = {}

    def _wanted(self, emulator: Emulator) -> dict[str, tuple[str, ...]]:
        objects = list(emulator.objects.items())
        services = [o for (_, _, p, _), o in objects
                    if p == "services" and o.get("spec", {}).get("type") == "NodePort"]
        wanted = {}
        for (_, _, plural, name), obj in objects:
            if plural != "deployments":
                continue
            status, spec = obj.get("status", {}), obj.get("spec", {})
            if not spec.get("replicas") or not status.get("availableReplicas"):
                continue
            labels = spec["template"]["metadata"]["labels"]
            for service in services:
                selector = service["spec"].get("selector", {})
                if selector and all(labels.get(k) == v for k, v in selector.items()):
                    port = service["spec"]["ports"][0]["nodePort"]
                    args = list(spec["template"]["spec"]["containers"][0]["args"])
                    wanted[name] = tuple(self._args(args, port))
        return wanted

    def _args(self, args: list[str], port: int) -> list[str]:
        out = list(args)
        for flag, value in (("--repo", self.repo), ("--host", "127.0.0.1"), ("--port", str(port))):
            out[out.index(flag) + 1] = value
        return out

    def sync(self, emulator: Emulator) -> None:
        wanted = self._wanted(emulator)
        for name, (args, proc) in list(self.running.items()):
            if wanted.get(name) != args:
                self._stop(proc)
                del self.running[name]
        for name, args in wanted.items():
            if name not in self.running:
                proc = subprocess.Popen([*self.command, *args], env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.running[name] = (args, proc)

    @staticmethod
    def _stop(proc: subprocess.Popen[Any]) -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        for _, proc in self.running.values():
            self._stop(proc)
        self.running.clear()
