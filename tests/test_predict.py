"""tools/predict.py on the demo data with tiny trained checkpoints of all three models.

One short training per arch (module fixture) gives real checkpoints and config.yaml files; the
tool runs in this process (its `main`) except where the exit status itself is under test.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from torchvision.models import get_weight
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from tests.training_setup import ARCHS, make_tiny_dataset, tiny_config, write_config
from zenith_det.categories import CategoryInfo
from zenith_det.checkpoint import load_checkpoint
from zenith_det.config import config_from_dict, load_config, recorded_categories, save_config
from zenith_det.data import load_coco
from zenith_det.prediction import read_image
from zenith_det.training import run_training
from zenith_det.visualize import enlarge
from zenith_det.weights import cached_file

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "predict.py"
NO_NETWORK = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
TASK_FIELD = {"maskrcnn": "segmentation", "keypointrcnn": "keypoints"}


def _load_tool():
    spec = importlib.util.spec_from_file_location("predict_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


predict_tool = _load_tool()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The tiny demo data and one 2-iteration run per arch (checkpoint, config.yaml, eval/)."""
    base = tmp_path_factory.mktemp("predict")
    data_root = make_tiny_dataset(base / "data")
    found = {"data": data_root}
    for arch in ARCHS:
        out = base / arch
        cfg = write_config(tiny_config(data_root, out, arch), base / f"{arch}.yaml")
        run_training(load_config(cfg))
        found[arch] = out
    return found


def _predict(*args: str) -> tuple[int, str, str]:
    """predict.py's main in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = predict_tool.main([*args, "--no-progress"])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _run_args(run: Path) -> list[str]:
    return ["--config", str(run / "config.yaml"), "--checkpoint", str(run / "best.pth")]


def _annotations(data_root: Path, arch: str, split: str = "val") -> Path:
    kind = "person_keypoints" if arch.startswith("keypoint") else "instances"
    return data_root / "annotations" / f"{kind}_{split}.json"


def _one_error_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_pictures_and_coco_results_for_each_arch(runs, arch, tmp_path):
    data_root = runs["data"]
    notes = tmp_path / "inputs" / "notes.jpg"  # an image's name, not an image
    notes.parent.mkdir()
    notes.write_text("not an image")
    out = tmp_path / "pred"
    code, stdout, err = _predict(
        *_run_args(runs[arch]),
        "--input",
        str(data_root / "val"),
        str(notes.parent / "*.jpg"),
        "--output-dir",
        str(out),
        "--score-threshold",
        "0",
        "--max-detections",
        "5",
    )
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and str(notes) in warnings[0], err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_read"] == 4 and summary["images_skipped"] == 1
    assert summary["category_names"] == "dataset"
    assert "4 image(s) read, 1 skipped" in stdout
    _check_pictures(summary, out)
    _check_records(summary, out, _annotations(data_root, arch), arch)


def _check_pictures(summary: dict, out: Path) -> None:
    for entry in summary["images"]:
        picture = read_image(out / entry["picture"])
        empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        original, _ = enlarge(read_image(Path(entry["path"])), empty)
        assert picture.shape == original.shape
        assert entry["detections"] > 0  # threshold 0: a tiny model detects something
        # JPEG alone moves pixels by a few levels; drawn boxes and labels move them far.
        changed = (picture.int() - original.int()).abs() > 60
        assert changed.any(dim=0).float().mean() > 0.005, entry["picture"]


def _check_records(summary: dict, out: Path, annotations: Path, arch: str) -> None:
    records = json.loads((out / "predictions.json").read_text())
    assert len(records) == summary["detections"] > 0
    gt = COCO(str(annotations))
    ids = {image["file_name"]: image["id"] for image in gt.dataset["images"]}
    for record in records:
        record["image_id"] = ids[record.pop("file_name")]
        assert record["category_id"] in gt.getCatIds()
        field = TASK_FIELD.get(arch.split("_")[0])
        if field is not None:
            assert field in record
    with contextlib.redirect_stdout(io.StringIO()):
        results = gt.loadRes(records)
    assert len(results.anns) == len(records)


def test_old_checkpoint_without_categories_names_labels_by_id(runs, tmp_path):
    run = runs[ARCHS[0]]
    state = load_checkpoint(run / "best.pth")
    del state["categories"]
    torch.save(state, tmp_path / "old.pth")
    save_config(load_config(run / "config.yaml"), tmp_path / "config.yaml")  # no categories
    image = sorted((runs["data"] / "val").iterdir())[0]
    code, _, err = _predict(
        "--config",
        str(tmp_path / "config.yaml"),
        "--checkpoint",
        str(tmp_path / "old.pth"),
        "--input",
        str(image),
        "--output-dir",
        str(tmp_path / "pred"),
    )
    assert code == 0, err
    assert "record no category names" in err
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["category_names"] == "fallback"


def test_runs_record_their_categories_in_checkpoints_and_config(runs):
    for arch in ARCHS:
        run = runs[arch]
        task = "keypoints" if arch.startswith("keypoint") else "detection"
        expected = CategoryInfo.from_coco(
            load_coco(_annotations(runs["data"], arch, "train")), task
        )
        state = load_checkpoint(run / "last.pth")  # weights_only=True
        assert CategoryInfo.from_dict(state["categories"]) == expected
        assert CategoryInfo.from_dict(recorded_categories(run / "config.yaml")) == expected
        # The block is not config: the written file loads to the checkpoint's config.
        assert load_config(run / "config.yaml") == config_from_dict(state["config"])
    assert expected.skeleton and len(expected.keypoint_names) == 5
    faster = CategoryInfo.from_dict(load_checkpoint(runs[ARCHS[0]] / "best.pth")["categories"])
    assert faster.ids == (1, 2, 4, 5)  # the demo's gap at 3


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS[:2])
def test_run_detections_rescore_with_eval_tool_to_the_same_numbers(runs, arch, tmp_path):
    run = runs[arch]
    annotations = _annotations(runs["data"], arch)
    detections = json.loads((run / "eval" / "detections.json").read_text())
    assert detections and {r["category_id"] for r in detections} <= {1, 2, 4, 5}
    assert _raw_model_emits_label(run, runs["data"], 3)  # what the evaluator had to drop
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "eval.py"),
            "--annotations",
            str(annotations),
            "--detections",
            str(run / "eval" / "detections.json"),
            "--output-dir",
            str(tmp_path / "rescored"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rescored = json.loads((tmp_path / "rescored" / "metrics.json").read_text())
    own = json.loads((run / "eval" / "metrics.json").read_text())
    assert _stats(rescored) == _stats(own)


def _stats(metrics: dict) -> dict:
    # The numbers only: a report may add entries of its own (picture paths) beside them.
    return {key: value for key, value in metrics.items() if key != "pictures"}


def _raw_model_emits_label(run: Path, data_root: Path, label: int) -> bool:
    from zenith_det.models import build_model

    cfg = load_config(run / "config.yaml")
    model = build_model(cfg.model, load_weights=False)
    model.load_state_dict(load_checkpoint(run / "last.pth")["model"])
    model.eval()
    images = [read_image(p).float() / 255 for p in sorted((data_root / "val").iterdir())]
    with torch.inference_mode():
        outputs = model(images)
    return any(bool((out["labels"] == label).any()) for out in outputs)


def test_no_readable_image_is_one_error_line_and_exit_2(runs, tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    (folder / "b.png").write_bytes(b"\x89PNG broken")
    code, _, err = _predict(
        *_run_args(runs[ARCHS[0]]), "--input", str(folder), "--output-dir", str(tmp_path / "pred")
    )
    _one_error_line(code, err, "no readable image", "a.txt")
    assert not (tmp_path / "pred").exists()


def test_existing_predictions_are_not_written_over_without_overwrite(runs, tmp_path):
    image = sorted((runs["data"] / "val").iterdir())[0]
    args = [*_run_args(runs[ARCHS[0]]), "--input", str(image), "--output-dir", str(tmp_path)]
    assert _predict(*args)[0] == 0
    before = (tmp_path / "predictions.json").stat().st_mtime_ns
    code, _, err = _predict(*args)
    _one_error_line(code, err, "already holds predictions", "--overwrite")
    assert (tmp_path / "predictions.json").stat().st_mtime_ns == before
    assert _predict(*args, "--overwrite")[0] == 0


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--weights", "X_Weights.Y", "--config", "c.yaml"], "or --weights"),
        (["--config", "c.yaml"], "both --config and --checkpoint"),
        (["--weights", "ResNet50_Weights.IMAGENET1K_V1"], "not a detection model"),
        (
            ["--weights", "FasterRCNN_ResNet50_FPN_Weights.COCO_V1", "--score-threshold", "2"],
            "[0, 1]",
        ),
    ],
)
def test_bad_arguments_are_one_line(args, fragment, tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    code, _, err = _predict(*args, "--input", str(image), "--output-dir", str(tmp_path / "o"))
    _one_error_line(code, err, fragment)


def test_missing_input_is_one_line(tmp_path):
    code, _, err = _predict(
        "--weights", "FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
        "--input", str(tmp_path / "nope" / "*.jpg"),
        "--output-dir", str(tmp_path / "o"),
    )  # fmt: skip
    _one_error_line(code, err, "matches no file")


@pytest.mark.slow
def test_torchvision_weights_by_name_from_the_hub_cache(runs, tmp_path, monkeypatch):
    name = "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for key, value in NO_NETWORK.items():
        monkeypatch.setenv(key, value)
    _seed_coco_weights(cached_file(get_weight(name)))
    image = sorted((runs["data"] / "val").iterdir())[0]
    out = tmp_path / "pred"
    code, _, err = _predict(
        "--weights", name, "--input", str(image), "--output-dir", str(out),
        "--score-threshold", "0",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["category_names"] == "torchvision"
    labels = {r["category_id"] for r in json.loads((out / "predictions.json").read_text())}
    # The seeded model prefers person (1) and the unused slot 12 ("N/A"): only 1 is a category.
    assert labels == {1}, labels


def _seed_coco_weights(path: Path) -> None:
    """A random COCO Faster R-CNN under torchvision's file name whose classifier favours 1, 12."""
    torch.manual_seed(3)
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    state = {k: v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    bias = state["roi_heads.box_predictor.cls_score.bias"]
    bias[1] = bias[12] = 8.0
    path.parent.mkdir(parents=True)
    torch.save(state, path)


def test_png_input_gives_a_png_picture_without_the_data_on_disk(runs, tmp_path):
    image = tmp_path / "figure.png"
    with Image.open(sorted((runs["data"] / "val").iterdir())[0]) as source:
        source.save(image)
    code, _, err = _predict(
        *_run_args(runs[ARCHS[2]]), "--set", f"data.root={tmp_path / 'gone'}",
        "--input", str(image), "--output-dir", str(tmp_path / "p"), "--score-threshold", "0",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["images"][0]["picture"] == "figure.png"
    assert summary["category_names"] == "dataset"  # from the checkpoint, not the data
    assert read_image(tmp_path / "p" / "figure.png").shape[0] == 3
