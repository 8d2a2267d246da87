"""RapidOCR's own pipeline on image files, run by the RapidOCR environment's python.

Not imported by the workbench or its tests: :mod:`tests.codecs._rapidocr` runs it as
``<rapidocr-env>/bin/python _rapidocr_runner.py`` with a JSON request on stdin::

    {"images": ["/tmp/page-0.png", ...], "rounds": 1, "warmup": false, "threads": 1}

and reads one JSON answer from stdout::

    {"rapidocr": "1.4.5", "paddle": "3.3.1", "load_seconds": 1.2, "peak_rss": 1048576000,
     "images": [{"lines": [{"box": [[x, y] x4], "text": "...", "score": 0.99}, ...],
                 "seconds": [0.41, ...]}, ...]}

``RapidOCR()`` runs with its own ``config.yaml`` (det -> cls -> rec with the PP-OCRv4 det
and rec and the v2 classifier its wheel ships), only ``cpu_math_library_num_threads`` set.
Each image's encoded bytes are read once and handed to the pipeline, which decodes them
itself (as the workbench's chain does). With ``warmup`` every image runs once first,
uncounted; then ``rounds`` passes, each timed per image; the lines are the last pass's.
``peak_rss`` is the runner's peak resident memory in bytes (``VmHWM``: getrusage's
``ru_maxrss`` would report the parent's RSS at the fork when that was larger).
Whatever Paddle prints goes to stderr; stdout carries the answer alone.
"""

import json
import os
import sys
import time


def main() -> None:
    answer = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything Paddle or RapidOCR prints goes to stderr
    os.environ.setdefault("GLOG_minloglevel", "3")
    request = json.load(sys.stdin)

    import paddle
    import rapidocr_paddle
    from rapidocr_paddle import RapidOCR

    started = time.perf_counter()
    engine = RapidOCR(cpu_math_library_num_threads=int(request.get("threads", -1)))
    load_seconds = time.perf_counter() - started
    images = []
    for path in request["images"]:
        with open(path, "rb") as handle:
            images.append(handle.read())
    if request.get("warmup"):
        for image in images:
            engine(image)
    seconds = [[] for _ in images]
    found = [None] * len(images)
    for _ in range(max(1, int(request.get("rounds", 1)))):
        for index, image in enumerate(images):
            began = time.perf_counter()
            result, _ = engine(image)
            seconds[index].append(time.perf_counter() - began)
            found[index] = result or []
    json.dump({
        "rapidocr": getattr(rapidocr_paddle, "__version__", None) or _version("rapidocr-paddle"),
        "paddle": paddle.__version__,
        "load_seconds": load_seconds,
        "peak_rss": _peak_rss(),
        "images": [
            {"lines": [{"box": [[float(x), float(y)] for x, y in box], "text": text, "score": float(score)}
                       for box, text, score in lines],
             "seconds": times}
            for lines, times in zip(found, seconds)
        ],
    }, answer)
    answer.close()


def _peak_rss():
    """This process's peak resident memory since it started its program, bytes (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
