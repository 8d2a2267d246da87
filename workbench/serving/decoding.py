"""Decode large request bodies in worker processes, so the event loop keeps answering.

Turning 50 MB of JSON into arrays is a few hundred milliseconds of C code (orjson,
numpy) that holds the GIL all along: in a thread it stalls the event loop as surely as
inline. :class:`BodyDecoder` sends bodies of ``large_body_bytes`` or more to a small
pool of spawned processes (started on the first large body) and lets ``workers`` of
them be read and decoded at once; the others wait at :attr:`gate`. Small bodies are
decoded inline, where a process hop would cost more than it saves; so are binary tensors
(the binary extension), which are views of the body: only the JSON part counts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from workbench.errors import ServingError
from workbench.serving.protocol import InferRequest, decode_infer_request

logger = logging.getLogger(__name__)


class BodyDecoder:
    """Decodes inference request bodies, large ones in worker processes."""

    def __init__(self, large_body_bytes: int, workers: int) -> None:
        self.large_body_bytes = large_body_bytes
        self.workers = workers
        self.gate = asyncio.Semaphore(workers)  # large bodies read and decoded at once
        self._pool: ProcessPoolExecutor | None = None

    def is_large(self, size: int | None) -> bool:
        """Whether a body of ``size`` bytes (None: unknown, chunked) goes through the gate."""
        return size is None or size >= self.large_body_bytes

    async def decode(
        self, body: bytes, header_length: int | None, *, allow_nonfinite: bool
    ) -> InferRequest:
        """The decoded request; ProtocolError for a bad one, wherever it was decoded.

        Only the JSON part is costly: binary tensors are views of the body.
        """
        if (header_length if header_length is not None else len(body)) < self.large_body_bytes:
            return decode_infer_request(body, header_length, allow_nonfinite=allow_nonfinite)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        work = functools.partial(
            decode_infer_request, body, header_length, allow_nonfinite=allow_nonfinite
        )
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work)
        except BrokenProcessPool as exc:
            self._pool = None  # a worker died (out of memory?): start afresh next time
            logger.error("a body decoding process died: %s", exc)
            raise ServingError("the request body could not be decoded (worker died)") from exc

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
