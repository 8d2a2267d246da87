"""Peer servers for bench_serving.py: MLServer 1.7 and KServe 0.21 around the same predictor.

Runs inside a throwaway virtual environment that bench_serving.py makes and caches (MLServer
and KServe never enter the project's lock); ``PYTHONPATH`` holds the project root and this
directory, so both servers open the predictor through the workbench's own Paddle adapter
(``PaddlePredictor.open``: the same ``paddle.inference.Config``, one predictor, ``--cpu-threads``
math threads) on ``<repo>/<model>/1.0.0``, the version every row of the benchmark serves.

    python bench/peers.py mlserver --repo DIR --model digits --port P --workers 1 --workdir DIR
    python bench/peers.py kserve --repo DIR --model digits --port P [--workers 2]

- MLServer: a custom runtime (``PaddleRuntime``, an ``MLModel``) in ``mlserver start`` with
  ``parallel_workers`` = ``--workers``. MLServer's REST API takes JSON tensors only (the binary
  tensor extension is not implemented on REST), so its rows get the JSON body.
- KServe: ``kserve.ModelServer`` with a ``kserve.Model`` (``PaddleKServe``); its REST data plane
  decodes the binary tensor extension, so its rows get the binary body and answer in binary.
  ``--workers 2`` is KServe's own multi-process REST server (spawned uvicorn workers sharing the
  socket); each worker unpickles the model and opens its own predictor.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


def open_predictor(repo: str, model: str, cpu_threads: int) -> Any:
    """The predictor every row serves: the workbench's Paddle adapter, version 1.0.0, on the CPU."""
    from workbench.model.formats import detect
    from workbench.runtime.device import Device
    from workbench.runtime.paddle import PaddlePredictor

    files = detect(Path(repo) / model / "1.0.0")
    return PaddlePredictor.open(files, Device("cpu"), cpu_threads=cpu_threads)


try:  # Each peer's class lives at module level: MLServer imports it by name in its workers.
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest, InferenceResponse
except ImportError:
    MLModel = None

if MLModel is not None:

    class PaddleRuntime(MLModel):  # type: ignore[misc]
        """MLServer custom runtime: decode the V2 request, run the predictor, encode the outputs."""

        async def load(self) -> bool:
            extra = self.settings.parameters.extra
            self._predictor = open_predictor(extra["repo"], extra["model"], extra["cpu_threads"])
            return True

        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            inputs = {spec.name: NumpyCodec.decode_input(spec) for spec in payload.inputs}
            outputs = self._predictor.run(inputs)
            return InferenceResponse(
                model_name=self.name,
                outputs=[NumpyCodec.encode_output(name, array) for name, array in outputs.items()],
            )


try:
    import kserve
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
except ImportError:
    kserve = None

if kserve is not None:

    class PaddleKServe(kserve.Model):  # type: ignore[misc]
        """KServe custom model: V2 in, V2 out (binary outputs when the request asks for them)."""

        def __init__(self, name: str, repo: str, model: str, cpu_threads: int) -> None:
            super().__init__(name)
            self.where = (repo, model, cpu_threads)
            self.load()

        def load(self) -> bool:
            self._predictor = open_predictor(*self.where)
            self.ready = True
            return True

        # KServe's multi-process server pickles the registered models into spawned workers:
        # a Paddle predictor cannot be pickled, so each worker opens its own.
        def __getstate__(self) -> dict[str, Any]:
            return {k: v for k, v in self.__dict__.items() if k != "_predictor"}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state)
            self.load()

        def predict(self, payload: InferRequest, headers: dict[str, str] | None = None
                    ) -> InferResponse:
            inputs = {spec.name: spec.as_numpy() for spec in payload.inputs}
            outputs = self._predictor.run(inputs)
            binary = payload.use_binary_outputs
            infer_outputs = []
            for name, array in outputs.items():
                out = InferOutput(name=name, shape=list(array.shape), datatype="FP32")
                out.set_data_from_numpy(np.asarray(array, dtype=np.float32), binary_data=binary)
                infer_outputs.append(out)
            return InferResponse(response_id=payload.id or "", model_name=self.name,
                                 infer_outputs=infer_outputs, use_binary_outputs=binary)


def run_mlserver(args: argparse.Namespace) -> None:
    """Write settings.json and model-settings.json under --workdir, then ``mlserver start``."""
    root = Path(args.workdir)
    model_dir = root / args.model
    model_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": args.port,
        "grpc_port": args.grpc_port,
        "metrics_port": args.metrics_port,
        "parallel_workers": args.workers,
        "environments_dir": str(root / ".envs"),
        "metrics_dir": str(root / ".metrics"),
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    model_settings = {
        "name": args.model,
        "implementation": "peers.PaddleRuntime",
        "parameters": {"extra": {"repo": args.repo, "model": args.model,
                                 "cpu_threads": args.cpu_threads}},
    }
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    mlserver = Path(sys.executable).with_name("mlserver")
    os.chdir(root)
    os.execv(str(mlserver), [str(mlserver), "start", str(root)])


def run_kserve(args: argparse.Namespace) -> None:
    import copy

    import kserve.logging
    import kserve.model_server

    # Warnings only, as the workbench and MLServer rows run: KServe otherwise logs an access
    # line and a timing line per request (in every worker process, which reads this config).
    config = copy.deepcopy(kserve.logging.KSERVE_LOG_CONFIG)
    for logger in config["loggers"].values():
        logger["level"] = os.environ.get("PEER_LOG", "WARNING")
    kserve.model_server.args.log_config_file = config
    kserve.logging.configure_logging(config)
    model = PaddleKServe(args.model, args.repo, args.model, args.cpu_threads)
    server = kserve.ModelServer(http_port=args.port, grpc_port=args.grpc_port,
                                workers=args.workers, enable_grpc=False,
                                enable_latency_logging=False)
    server.start([model])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("peer", choices=["mlserver", "kserve"])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--metrics-port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--workdir", default=".")
    args = parser.parse_args()
    if args.peer == "mlserver":
        if MLModel is None:
            sys.exit("mlserver is not installed in this environment")
        run_mlserver(args)
    else:
        if kserve is None:
            sys.exit("kserve is not installed in this environment")
        run_kserve(args)


if __name__ == "__main__":
    main()
