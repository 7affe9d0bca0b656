"""Distributed faults in real 2-rank torchrun runs: a hung rank, ranks that disagree at start-up,
and a bad config on every rank. (A rank that raises mid-run: test_bad_data.py's corrupt JPEG.)"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.reliability.runs import config_file, run, two_rank_config

pytestmark = pytest.mark.slow


def test_stalled_rank_makes_the_other_stop_after_dist_timeout_naming_it(data_root, tmp_path):
    marker = tmp_path / "stalled"
    cfg = two_rank_config(data_root, tmp_path / "run", dist_timeout_s=8)
    # Rank 1 stalls past rank 0's timeout. (One that never wakes up ignores torchrun's SIGTERM,
    # whose handler only sets the stop flag, and is SIGKILLed 30 s later: see docs/reliability.md.)
    fault = {"kind": "pause", "rank": 1, "step": 1, "marker": str(marker), "seconds": 12}
    result = run(["--config", config_file(cfg, tmp_path)], tmp_path, [fault])
    assert result.returncode != 0
    assert result.rank_exits == {0: 1, 1: 1}, result.stderr[-3000:]
    errors = result.error_lines()
    first = next(line for line in errors if line.startswith("error: [rank 0] "))
    assert first.startswith("error: [rank 0] lost contact with rank(s) [1]"), first
    assert "train.dist_timeout_s=8" in first and "Timed out" in first
    waited = (tmp_path / "exits" / "rank0").stat().st_mtime - marker.stat().st_mtime
    print(f"rank 0 gave up {waited:.1f}s after rank 1 stalled; whole run {result.elapsed:.1f}s")
    assert 8 <= waited < 30, waited


def _dataset_without_one_image(data_root, dest):
    shutil.copytree(data_root, dest)
    ann_file = dest / "annotations" / "instances_train.json"
    coco = json.loads(ann_file.read_text())
    coco["images"] = [img for img in coco["images"] if img["id"] != 8]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != 8]
    ann_file.write_text(json.dumps(coco))


@pytest.mark.parametrize("disagreement", ["config", "dataset"])
def test_ranks_that_disagree_stop_at_start_up(disagreement, data_root, tmp_path):
    out = tmp_path / "run"
    if disagreement == "config":
        cfg = two_rank_config(data_root, out)
        # As if one node's launch command carried another override.
        faults = [{"kind": "args", "rank": 1, "args": ["--set", "train.seed=8"]}]
        expected = "ranks [1] resolved a different config than rank 0 (rank 1: train.seed: 7 -> 8)"
    else:
        # The same relative data.root resolves to each node's own copy; node 1's lacks image 8.
        shutil.copytree(data_root, tmp_path / "node0" / "data")
        _dataset_without_one_image(data_root, tmp_path / "node1" / "data")
        cfg = two_rank_config("data", out)
        faults = [{"kind": "cwd", "rank": r, "dir": str(tmp_path / f"node{r}")} for r in (0, 1)]
        expected = "ranks [1] see a different dataset than rank 0: (train, val) images per rank "
        expected += "[(8, 4), (7, 4)]"
    result = run(["--config", config_file(cfg, tmp_path)], tmp_path, faults)
    assert result.rank_exits == {0: 2, 1: 2}, result.stderr[-3000:]
    errors = result.error_lines()
    assert len(errors) == 2 and all(expected in line for line in errors), errors
    assert "[rank0]: Traceback" not in result.stderr and "[rank1]: Traceback" not in result.stderr
    assert not out.exists()  # stopped before writing anything


def test_bad_config_on_every_rank_is_one_line_each_and_writes_nothing(data_root, tmp_path):
    out = tmp_path / "run"
    cfg = config_file(two_rank_config(data_root, out), tmp_path)
    result = run(["--config", cfg, "--set", "optimizer.lr=-0.1"], tmp_path)
    assert result.rank_exits == {0: 2, 1: 2}, result.stderr[-3000:]
    errors = result.error_lines()
    assert sorted(e[:16] for e in errors) == ["error: [rank 0] ", "error: [rank 1] "]
    assert all("optimizer.lr" in e and "expected a number > 0" in e for e in errors), errors
    assert not out.exists()


def test_data_missing_on_one_node_ends_the_run_at_once(data_root, tmp_path):
    # Rank 1 fails before joining the process group; rank 0 waits for it in the rendezvous,
    # where SIGTERM still has its default action, so torchrun's SIGTERM ends it at once
    # (not after train.dist_timeout_s, 1800 s by default).
    shutil.copytree(data_root, tmp_path / "node0" / "data")
    (tmp_path / "node1").mkdir()
    cfg = two_rank_config("data", tmp_path / "run")
    faults = [{"kind": "cwd", "rank": r, "dir": str(tmp_path / f"node{r}")} for r in (0, 1)]
    result = run(["--config", config_file(cfg, tmp_path)], tmp_path, faults)
    assert result.rank_exits == {1: 2}, result.stderr[-3000:]  # rank 0 was terminated
    (line,) = result.error_lines()
    assert line.startswith("error: [rank 1] ") and "data.train_images: directory not found" in line
    print(f"run ended {result.elapsed:.1f}s after start")
    assert result.elapsed < 120
