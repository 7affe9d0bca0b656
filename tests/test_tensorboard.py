"""train.tensorboard: metrics.jsonl's scalars and val pictures in TensorBoard, read back with
TensorBoard's own event reader; a resumed run continues the curves without a step twice."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.training_setup import make_tiny_dataset, tiny_config
from zenith_det.config import config_from_dict
from zenith_det.errors import SetupError
from zenith_det.metrics_log import read_metrics
from zenith_det.tensorboard_log import NUM_IMAGES, TENSORBOARD_DIR, record_scalars
from zenith_det.training import run_training

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="needs the tensorboard extra (make installs it)",
)

TRAIN_TAGS = {
    "train/loss",
    "train/loss_classifier",
    "train/lr",
    "train/zenith_ratio",
    "train/grad_norm",
    "train/grad_norm_window_mean",
    "train/images_per_s",
}
EVAL_TAGS = {"eval/bbox/AP", "eval/bbox/AP50", "eval/primary_AP"}


def _config(data_root: Path, out: Path, **train):
    train = {"tensorboard": True, "epochs": 2, **train}
    return config_from_dict(tiny_config(data_root, out, train=train))


def _events(out: Path):
    reader = event_accumulator.EventAccumulator(
        str(out / TENSORBOARD_DIR), size_guidance={"scalars": 0, "images": 0}
    )
    reader.Reload()
    return reader


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """The tiny demo dataset of this module's runs."""
    return make_tiny_dataset(tmp_path_factory.mktemp("tb_data"))


@pytest.fixture(scope="module")
def run(data_root: Path, tmp_path_factory) -> Path:
    """A 2-epoch run (2 iterations each, an evaluation after each) with TensorBoard on."""
    out = tmp_path_factory.mktemp("tb") / "run"
    run_training(_config(data_root, out))
    return out


@pytest.mark.slow
def test_scalars_are_the_records_of_metrics_jsonl(run: Path) -> None:
    reader = _events(run)
    tags = set(reader.Tags()["scalars"])
    assert TRAIN_TAGS | EVAL_TAGS <= tags
    assert "eval/bbox/APl" not in tags  # pycocotools' -1: the demo has no large objects
    records = read_metrics(run / "metrics.jsonl")
    expected: dict[str, dict[int, float]] = {}
    for record in records:
        for tag, value in record_scalars(record).items():
            expected.setdefault(tag, {})[record["step"]] = value
    assert set(expected) == tags
    for tag, by_step in expected.items():
        events = reader.Scalars(tag)
        assert [e.step for e in events] == sorted(by_step), tag
        assert [e.value for e in events] == pytest.approx(
            list(by_step.values()), rel=1e-6, nan_ok=True
        )
    assert [e.step for e in reader.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in reader.Scalars("eval/bbox/AP")] == [2, 4]


@pytest.mark.slow
def test_each_evaluation_adds_the_same_val_pictures(run: Path) -> None:
    reader = _events(run)
    tags = reader.Tags()["images"]
    assert len(tags) == NUM_IMAGES and all(tag.startswith("val/") for tag in tags)
    for tag in tags:
        images = reader.Images(tag)
        assert [image.step for image in images] == [2, 4]
        # Ground truth and predictions side by side, each enlarged from the 96-160 px image.
        assert images[0].width > 2 * 320 and images[0].height > 320
        assert images[0].encoded_image_string.startswith(b"\x89PNG")


@pytest.mark.slow
def test_resume_from_an_earlier_checkpoint_has_no_step_twice(
    run: Path, data_root: Path, tmp_path: Path
) -> None:
    """Resuming at the epoch-1 snapshot redoes steps 3-4: the old ones are purged."""
    out = tmp_path / "resumed"
    shutil.copytree(run, out)
    cfg = _config(data_root, out)
    run_training(cfg, resume=str(out / "model_e0001_i000000.pth"))
    reader = _events(out)
    records = read_metrics(out / "metrics.jsonl")
    for tag in TRAIN_TAGS | EVAL_TAGS:
        steps = [e.step for e in reader.Scalars(tag)]
        assert len(steps) == len(set(steps)), (tag, steps)
    losses = {e.step: e.value for e in reader.Scalars("train/loss")}
    assert sorted(losses) == [1, 2, 3, 4]
    resumed = {r["step"]: r["loss"] for r in records if r["type"] == "train"}
    assert list(losses.values()) == pytest.approx([resumed[s] for s in sorted(losses)], rel=1e-6)
    for tag in reader.Tags()["images"]:
        assert [image.step for image in reader.Images(tag)] == [2, 4]


def test_without_tensorboard_installed_the_run_stops_before_writing(
    data_root: Path, tmp_path: Path, monkeypatch
) -> None:
    for name in ("tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail
    out = tmp_path / "no_tb"
    with pytest.raises(SetupError, match=r"pip install 'zenith_det\[tensorboard\]'") as info:
        run_training(_config(data_root, out))
    assert "\n" not in str(info.value)
    assert not out.exists() or not any(out.iterdir())
