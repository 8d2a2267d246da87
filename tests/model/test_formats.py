"""Paddle 2 (.pdmodel) and legacy (__model__/__params__) versions load like Paddle 3 ones."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from workbench import ModelRepository, VersionHub
from workbench.errors import RepositoryError
from workbench.model.formats import detect
from workbench.runtime.paddle import PaddleProbe

EXPORT = textwrap.dedent(
    """
    import sys
    import paddle
    from paddle.static import InputSpec
    paddle.seed(7)
    net = paddle.nn.Sequential(paddle.nn.Linear(4, 3), paddle.nn.Softmax())
    net.eval()
    x = paddle.to_tensor([[1.0, 2.0, 3.0, 4.0]])
    paddle.jit.save(net, sys.argv[1] + "/inference", input_spec=[InputSpec([None, 4], "float32", "x")])
    print(",".join(str(v) for v in net(x).numpy()[0]))
    """
)


@pytest.fixture(scope="module")
def paddle2_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A Paddle 2 program exported by Paddle itself (the old IR, in a fresh process)."""
    target = tmp_path_factory.mktemp("pdmodel")
    env = {**os.environ, "FLAGS_enable_pir_api": "0", "GLOG_minloglevel": "3"}
    proc = subprocess.run([sys.executable, "-c", EXPORT, str(target)], capture_output=True, text=True,
                          env=env, timeout=300, check=True)
    expected = np.array([float(v) for v in proc.stdout.strip().splitlines()[-1].split(",")], np.float32)
    (target / "inference.pdiparams.info").unlink(missing_ok=True)
    return target, expected


@pytest.mark.parametrize("layout", ["pdmodel", "legacy"])
def test_older_formats_publish_load_and_predict(
    layout: str, paddle2_export: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    export, expected = paddle2_export
    source = tmp_path / "source"
    source.mkdir()
    if layout == "pdmodel":
        shutil.copy(export / "inference.pdmodel", source)
        shutil.copy(export / "inference.pdiparams", source)
    else:
        shutil.copy(export / "inference.pdmodel", source / "__model__")
        shutil.copy(export / "inference.pdiparams", source / "__params__")
    repo = ModelRepository(tmp_path / "repo")
    manifest = repo.publish("tiny", "1.0.0", source, sample={"x": np.ones((2, 4), np.float32)}, probe=PaddleProbe())
    assert manifest.format == layout
    hub = VersionHub(repo, "tiny", device="cpu")
    hub.load("1.0.0")
    outputs = hub.predict({"x": np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)}).outputs
    np.testing.assert_allclose(next(iter(outputs.values()))[0], expected, rtol=1e-5)
    hub.close()


def test_detect_refuses_ambiguous_or_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="no Paddle model"):
        detect(tmp_path)
    for name in ("a.json", "a.pdiparams", "b.pdmodel", "b.pdiparams"):
        (tmp_path / name).write_text("x")
    with pytest.raises(RepositoryError, match="several Paddle models"):
        detect(tmp_path)
