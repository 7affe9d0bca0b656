"""Fixtures of the reliability tests: the tiny dataset and one uninterrupted 2-rank run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.runs import Background, config_file, run, two_rank_config
from tests.training_setup import make_tiny_dataset


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """8 train and 4 val images of the demo data, shared by every test here (read-only)."""
    return make_tiny_dataset(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def reference(data_root, tmp_path_factory) -> Path:
    """Output dir of an uninterrupted 2-rank run of `two_rank_config`: what resumes must equal."""
    work = tmp_path_factory.mktemp("reference")
    out = work / "run"
    result = run(["--config", config_file(two_rank_config(data_root, out), work)], work)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture
def background():
    """Start `Background` runs; whatever is still running when the test ends is killed."""
    jobs: list[Background] = []

    def start(*args, **kwargs) -> Background:
        jobs.append(Background(*args, **kwargs))
        return jobs[-1]

    yield start
    for job in jobs:
        job.kill()
