"""A version's predictor in its own worker process; tensors through shared memory.

The front process (serving instance, notebook kernel, CLI) never imports Paddle in
this mode: it starts a worker (a fresh interpreter, never a fork, so no Paddle
state is copied), which opens the predictor on its device and answers one
small control message per batch over a socket. The tensors themselves go through one
shared-memory segment per worker, owned by the front: preallocated, grown on demand
(the next message names the new segment) and unlinked when the worker stops.

Control messages are tuples, pickled, one datagram each on a ``SOCK_SEQPACKET`` socket
pair (:class:`Channel`: one system call per message each way, no length prefix to read
first; a message over :data:`PACKET` bytes goes as several datagrams):

- front → worker: ``("run", segment, [(name, dtype, shape, offset), ...])``, ``("stop",)``
- worker → front: ``("ok", [(name, dtype, shape, offset), ...])`` outputs in the segment,
  ``("inline", {name: array}, needed_bytes)`` when the outputs did not fit,
  ``("error", kind, message)``; at start ``("ready", pid)`` or ``("error", kind, message)``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from multiprocessing import shared_memory
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench import errors
from workbench.errors import ModelLoadError, WorkerDiedError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from workbench._types import Tensors, TensorsIn
    from workbench.runtime.device import Device

log = logging.getLogger(__name__)
ALIGN = 64
MIN_SEGMENT = 1 << 20
START_TIMEOUT = 120.0
STOP_TIMEOUT = 5.0
MAX_BACKOFF = 30.0  # seconds between two restart attempts, at most

Layout = list[tuple[str, str, tuple[int, ...], int]]
SCHEDULING_ENV = "WORKBENCH_WORKER_SCHEDULING"  # "batch": SCHED_BATCH workers (throughput)
PACKET = 32 * 1024  # the largest control datagram; longer messages are sent in parts
_WHOLE, _PARTS = b"\x00", b"\x01"


class Channel:
    """The control channel's end: pickled tuples, one datagram per message.

    ``recv`` raises EOFError when the other end has closed, as
    :class:`multiprocessing.connection.Connection` does.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray(PACKET + 1)
        self._view = memoryview(self._buffer)

    @classmethod
    def pair(cls) -> tuple[Channel, socket.socket]:
        """The front's channel and the socket to hand to the worker."""
        front, back = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(front), back

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, message: object) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        sock = self._sock
        if len(data) <= PACKET:
            sock.sendmsg((_WHOLE, data))
            return
        sock.sendmsg((_PARTS, struct.pack("<Q", len(data))))
        view = memoryview(data)
        for start in range(0, len(data), PACKET):
            sock.sendall(view[start:start + PACKET])

    def recv(self) -> Any:
        size = self._sock.recv_into(self._buffer)
        if size == 0:
            raise EOFError("the other end closed the channel")
        if self._buffer[0:1] == _WHOLE:
            return pickle.loads(self._view[1:size])
        (total,) = struct.unpack_from("<Q", self._buffer, 1)
        data = bytearray(total)
        got = 0
        while got < total:
            size = self._sock.recv_into(memoryview(data)[got:], min(PACKET, total - got))
            if size == 0:
                raise EOFError("the other end closed the channel")
            got += size
        return pickle.loads(data)

    def poll(self, timeout: float) -> bool:
        """Whether a message (or the end of the channel) is waiting, within ``timeout``."""
        readable, _, _ = select.select([self._sock], [], [], timeout)
        return bool(readable)

    def close(self) -> None:
        self._sock.close()


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def _segment_size(needed: int) -> int:
    """The next power of two at or above ``needed`` (at least 1 MiB)."""
    size = MIN_SEGMENT
    while size < needed:
        size *= 2
    return size


def _write(buf: memoryview, parts: Sequence[TensorsIn]) -> Layout:
    """Write ``parts`` stacked along the batch axis, each tensor at an aligned offset.

    One part is written as it is; several (requests a batcher merged, with the same
    names, dtypes and row shapes) go straight into place, with no concatenated copy.
    """
    layout: Layout = []
    offset = 0
    for name, first in parts[0].items():
        shape = first.shape if len(parts) == 1 else (
            sum(part[name].shape[0] for part in parts), *first.shape[1:])
        view: np.ndarray[Any, Any] = np.ndarray(shape, first.dtype, buffer=buf, offset=offset)
        if len(parts) == 1:
            view[...] = first
        else:
            row = 0
            for part in parts:
                rows = part[name].shape[0]
                view[row:row + rows] = part[name]
                row += rows
        layout.append((name, first.dtype.str, tuple(shape), offset))
        offset = _aligned(offset + view.nbytes)
        del view
    return layout


def _nbytes(parts: Sequence[TensorsIn]) -> int:
    return sum(_aligned(sum(np.asarray(part[name]).nbytes for part in parts)) for name in parts[0])


def _read(buf: memoryview, layout: Layout, *, copy: bool) -> Tensors:
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name, dtype, shape, offset in layout:
        view: np.ndarray[Any, Any] = np.ndarray(shape, np.dtype(dtype), buffer=buf, offset=offset)
        out[name] = view.copy() if copy else view
    return out


def _buf(segment: shared_memory.SharedMemory) -> memoryview:
    buf = segment.buf
    if buf is None:
        raise RuntimeError(f"shared memory segment {segment.name} is closed")
    return buf


def _error(exc: BaseException) -> tuple[str, str, str]:
    kind = type(exc).__name__ if isinstance(exc, errors.WorkbenchError) else "PredictError"
    return ("error", kind, str(exc))


def _rebuild(kind: str, message: str) -> errors.WorkbenchError:
    cls = getattr(errors, kind, errors.PredictError)
    if not (isinstance(cls, type) and issubclass(cls, errors.WorkbenchError)):
        cls = errors.PredictError
    try:
        return cls(message)
    except TypeError:  # an error class with another constructor
        return errors.PredictError(message)


# -- the worker process --------------------------------------------------------------


def worker_main(fd: int) -> None:
    """Entry point of a worker process: open the predictor, then serve control messages."""
    from multiprocessing import resource_tracker

    # The front owns (and unlinks) every segment; a tracker here would unlink them
    # when this process exits.
    resource_tracker.register = lambda *args, **kwargs: None  # type: ignore[assignment]
    os.environ.setdefault("GLOG_minloglevel", "3")
    _throughput_scheduling()
    conn = Channel(socket.socket(fileno=fd))
    label, path, device, cpu_threads, input_names = conn.recv()
    try:
        from workbench.model import formats
        from workbench.model.manifest import Manifest
        from workbench.runtime.paddle import PaddlePredictor

        # the version's runtime settings come from its manifest, verified by the front
        settings = Manifest.read(path).runtime
        predictor = PaddlePredictor.open(
            formats.detect(path), device, cpu_threads=cpu_threads, settings=settings
        )
        if set(predictor.input_names) != set(input_names):
            raise ModelLoadError(
                f"{label}: the model's inputs {predictor.input_names} differ from the "
                f"manifest's {sorted(input_names)}"
            )
    except BaseException as exc:
        conn.send(_error(exc) if isinstance(exc, errors.WorkbenchError)
                  else ("error", "ModelLoadError", f"{label}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    segment: shared_memory.SharedMemory | None = None
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return  # the front is gone
            if message[0] == "stop":
                return
            _, name, layout = message
            if segment is None or segment.name != name:
                if segment is not None:
                    segment.close()
                segment = shared_memory.SharedMemory(name=name)
            try:
                inputs = _read(_buf(segment), layout, copy=False)
                outputs = predictor.run(inputs)
                del inputs
                needed = _nbytes([outputs])
                if needed <= segment.size:
                    conn.send(("ok", _write(_buf(segment), [outputs])))
                else:
                    conn.send(("inline", outputs, needed))
            except BaseException as exc:
                conn.send(_error(exc))
    finally:
        predictor.release()
        if segment is not None:
            segment.close()


def _throughput_scheduling() -> None:
    """With ``WORKBENCH_WORKER_SCHEDULING=batch`` (``workbench serve`` sets it), run this
    process under SCHED_BATCH: a worker woken by a control message does not preempt the
    front on its core but runs when the front waits, so the front finishes the request
    it is in instead of coming back to cold caches. On a core shared by front and worker
    this cut the CPU time per request by about 3% (alternating runs under ``wrk``). The
    price is latency when the core is busy with something else: a batch-scheduled worker
    waits for it, which a notebook's or the CLI's single requests would feel, so they
    keep the normal policy."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None or os.environ.get(SCHEDULING_ENV, "").lower() != "batch":
        return
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, policy, os.sched_param(0))


# -- the front's handle --------------------------------------------------------------


class WorkerPredictor:
    """The front's handle on one worker process; one batch at a time (not thread-safe).

    Implements the runtime's predictor seam (``run``, ``clone``, ``release``), so a
    loaded version drives it like an in-process predictor. A worker that dies fails
    the batch it was running with :class:`WorkerDiedError` naming the version.
    """

    def __init__(
        self,
        *,
        label: str,
        path: Path,
        device: Device,
        cpu_threads: int,
        input_names: list[str],
        segment_bytes: int = MIN_SEGMENT,
    ) -> None:
        self.label = label
        self._args = (label, path, device, cpu_threads, list(input_names))
        self._segment_bytes = _segment_size(segment_bytes)
        self._segment: shared_memory.SharedMemory | None = None
        self._conn: Channel | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self.pid: int | None = None
        self.broken = False

    def __repr__(self) -> str:
        return f"<WorkerPredictor {self.label} pid={self.pid}>"

    def start(self) -> WorkerPredictor:
        """Start the worker and wait until its predictor is open; load errors are re-raised.

        A fresh interpreter (``python -m workbench.runtime.worker``), never a fork: no
        Paddle state is copied, and the caller's ``__main__`` is not run again. It gets
        its own process group, so a signal to the front's group spares it, but stays in
        the front's session: with the kernel's autogroup scheduling (on where CPU cgroups
        are not used, e.g. processes on a shared host) CPU is shared between sessions,
        and a worker in a session of its own was scheduled as another tenant, each
        request waiting for it to get its turn (docs/benchmarks.md, OCR through codecs).
        """
        front, back = Channel.pair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "workbench.runtime.worker", str(back.fileno())],
                pass_fds=[back.fileno()],
                stdin=subprocess.DEVNULL,
                process_group=0,
            )
        finally:
            back.close()
        self._conn, self._process = front, process
        self._pidfd = os.pidfd_open(process.pid)
        try:
            self._conn.send(self._args)
            if not self._conn.poll(START_TIMEOUT):
                raise ModelLoadError(f"{self.label}: the worker did not start in {START_TIMEOUT:.0f}s")
            reply = self._conn.recv()
        except (EOFError, OSError) as exc:
            code = process.wait(STOP_TIMEOUT)
            self._stop_process()
            raise ModelLoadError(
                f"{self.label}: the worker exited while loading (exit code {code})"
            ) from exc
        except BaseException:
            self._stop_process()
            raise
        if reply[0] != "ready":
            self._stop_process()
            raise _rebuild(reply[1], reply[2])
        self.pid = int(reply[1])
        self._segment = shared_memory.SharedMemory(create=True, size=self._segment_bytes)
        self.broken = False
        return self

    @property
    def sentinel(self) -> int | None:
        """A file descriptor that becomes readable when the worker process ends."""
        return self._pidfd

    @property
    def alive(self) -> bool:
        return not self.broken and self._process is not None and self._process.poll() is None

    def run(self, inputs: TensorsIn) -> Tensors:
        return self.receive(self.send([inputs]))

    def send(self, parts: Sequence[TensorsIn]) -> Channel:
        """Write ``parts`` (stacked along the batch axis) into the segment and send the
        control message; returns the connection the reply comes on (see :meth:`receive`)."""
        conn, segment = self._conn, self._segment
        if conn is None or segment is None:
            raise WorkerDiedError(f"{self.label}: the worker is not running")
        needed = _nbytes(parts)
        if needed > segment.size:
            segment = self._grow(needed)
        layout = _write(_buf(segment), parts)
        try:
            conn.send(("run", segment.name, layout))
        except OSError as exc:
            raise self._died() from exc
        return conn

    def receive(self, conn: Channel) -> Tensors:
        """The outputs of the batch :meth:`send` sent on ``conn`` (blocks until they come)."""
        try:
            reply = conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died() from exc
        if reply[0] == "ok":
            if self._segment is None:  # released meanwhile
                raise self._died()
            return _read(_buf(self._segment), reply[1], copy=True)
        if reply[0] == "inline":
            self._grow(reply[2])
            outputs: Tensors = reply[1]
            return outputs
        raise _rebuild(reply[1], reply[2])

    def _died(self) -> WorkerDiedError:
        self.broken = True
        return WorkerDiedError(
            f"{self.label}: its worker process (pid {self.pid}) died while running the batch"
        )

    @property
    def fileno(self) -> int | None:
        """The control channel's descriptor: readable when a reply (or the worker's end) comes."""
        return self._conn.fileno() if self._conn is not None else None

    def _grow(self, needed: int) -> shared_memory.SharedMemory:
        old = self._segment
        self._segment = shared_memory.SharedMemory(create=True, size=_segment_size(needed))
        if old is not None:
            old.close()
            old.unlink()
        return self._segment

    def clone(self) -> WorkerPredictor:
        """Another worker process for the same version (one more CPU core's worth)."""
        label, path, device, cpu_threads, names = self._args
        return WorkerPredictor(
            label=label, path=path, device=device, cpu_threads=cpu_threads, input_names=names,
            segment_bytes=self._segment.size if self._segment else MIN_SEGMENT,
        ).start()

    def release(self) -> None:
        """Stop the worker (its memory returns to the system) and free the segment."""
        if self._conn is not None and not self.broken:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("stop",))
        self._stop_process()
        if self._segment is not None:
            self._segment.close()
            with contextlib.suppress(FileNotFoundError):
                self._segment.unlink()
            self._segment = None

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                # its own group: this reaches the worker and anything it started, nothing else
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def backoff_delays() -> Iterator[float]:
    """Seconds to wait before each restart attempt: 0, 1, 1, 2, 3, 5, 8, ..., then 30 s
    for ever. A worker that cannot come back (a driver gone, a disk full) keeps being
    tried at a slow pace and returns by itself once the cause is fixed."""
    yield 0.0
    previous, delay = 0.0, 1.0
    while True:
        yield delay
        previous, delay = delay, min(MAX_BACKOFF, previous + delay)


def wait_for_exit(sentinels: list[int], timeout: float) -> list[int]:
    """The sentinels (of :attr:`WorkerPredictor.sentinel`) whose process has ended."""
    from multiprocessing.connection import wait

    started = time.monotonic()
    ready = wait(sentinels, timeout) if sentinels else []
    if not sentinels:
        time.sleep(max(0.0, timeout - (time.monotonic() - started)))
    return [s for s in ready if isinstance(s, int)]


if __name__ == "__main__":
    worker_main(int(sys.argv[1]))
