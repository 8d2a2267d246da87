"""Every ```toml block of the documentation is an analysis file the canary accepts: a key
misspelt on a page would be refused, in one sentence, when a user copies it."""

from __future__ import annotations

import pytest
import tomllib

from tests.docs._blocks import all_blocks
from workbench.deploy.rollout.analysis import AnalysisSpec

FILES = all_blocks("toml")


def test_the_pages_have_analysis_files() -> None:
    assert len(FILES) >= 3, [b.where for b in FILES]


@pytest.mark.parametrize("block", FILES, ids=lambda b: b.where)
def test_analysis_file_loads_as_written(block) -> None:
    spec = AnalysisSpec.from_dict(tomllib.loads(block.body), source=block.where)
    assert spec.rules, block.where
