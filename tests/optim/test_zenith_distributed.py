"""Real 2-process gloo runs: one shared LR, one all_reduce per step (docs/zenith.md, decision 6)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.optim import _dist_workers as workers
from tests.optim.spec_reference import spec_lrs


@pytest.fixture(scope="module")
def gloo_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Both reductions on 2 ranks whose local gradients differ (no DDP)."""
    return workers.spawn_ranks(workers.gloo_worker, tmp_path_factory.mktemp("gloo"))


def _combined(mode: str, rank_norms: list[list[float]]) -> list[float]:
    """The per-step global norm of docs/zenith.md, decision 6, from the ranks' local norms."""
    if mode == "mean":
        return [math.fsum(step) / len(step) for step in zip(*rank_norms, strict=True)]
    return [math.sqrt(math.fsum(n * n for n in step)) for step in zip(*rank_norms, strict=True)]


@pytest.mark.parametrize("mode", ["mean", "sum_squares"])
def test_ranks_apply_the_spec_lr_of_the_reduced_norm(
    gloo_results: list[dict[str, Any]], mode: str
) -> None:
    """Every rank applies the same LR, the rule's LR for the reduced norm; NaN skips on all."""
    rank0, rank1 = (result[mode] for result in gloo_results)
    assert rank0["lrs"] == rank1["lrs"]
    assert rank0["local_norms"] != rank1["local_norms"]
    norms = _combined(mode, [rank0["local_norms"], rank1["local_norms"]])
    expected = spec_lrs(norms, window=workers.GLOO_WINDOW, base_lrs=[0.1])
    for step, (lr, want) in enumerate(zip(rank0["lrs"], expected, strict=True)):
        assert lr == pytest.approx(want[0], rel=1e-6), step
    recorded = rank0["recorded_norms"]
    assert recorded[: workers.NAN_STEP] == pytest.approx(norms[: workers.NAN_STEP], rel=1e-6)
    assert math.isnan(recorded[workers.NAN_STEP])
    for result in (rank0, rank1):
        assert result["skipped"] == 1
        assert result["steps"] == workers.GLOO_STEPS - 1


def test_exactly_one_all_reduce_per_step(gloo_results: list[dict[str, Any]]) -> None:
    """One scalar all_reduce per step() call, skipped steps included, on every rank."""
    for result in gloo_results:
        for mode in ("mean", "sum_squares"):
            assert result[mode]["all_reduce_calls"] == workers.GLOO_STEPS


def test_ddp_split_batch_matches_single_process_full_batch(tmp_path: Path) -> None:
    """2-rank DDP on half batches follows the single-process full-batch run.

    Not bitwise: DDP averages two half-batch mean gradients ((g0 + g1) / 2) while the reference
    takes the mean over all 8 rows at once, so the sums round differently (~1 ulp per step).
    """
    ranks = workers.spawn_ranks(workers.ddp_worker, tmp_path)
    model = workers.ddp_model()
    optimizer = workers.ddp_optimizer(model)
    expected_lrs = workers.train_ddp_steps(model, optimizer, slice(0, 8))
    for result in ranks:
        assert result["all_reduce_calls"] == workers.DDP_STEPS
        assert result["lrs"] == pytest.approx(expected_lrs, rel=1e-12)
        for got, want in zip(result["params"], model.parameters(), strict=True):
            torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-14)
    for got0, got1 in zip(ranks[0]["params"], ranks[1]["params"], strict=True):
        assert torch.equal(got0, got1)
    assert expected_lrs[0] == pytest.approx(0.05 * 0.001)
    assert min(expected_lrs[3:]) < 0.05 * (1 - 1e-6)
