"""benchmarks/pretrain.py: the cache key, reuse of a finished source model, the plateau rule,
and the fine-tuning path from a source checkpoint into each target config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from zenith_det.config import load_config
from zenith_det.data import synthetic_variants
from zenith_det.errors import ConfigError
from zenith_det.models import build_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmarks import each other as scripts

import pretrain  # noqa: E402

SOURCE = "configs/league/source/faster_rcnn_r18_multistep.yaml"
# (model, target config): every fine-tuning target the league has for a source model.
BOX = ["roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred"]
TARGETS = [  # 10 classes -> 2 (trees); 10 -> 6 (target shapes); 5 keypoints -> 7 (walker)
    ("faster_rcnn_r18", "configs/league/deepforest_trees_ft/faster_rcnn_r18_multistep.yaml", BOX),
    (
        "mask_rcnn_r18",
        "configs/league/shapes_target/mask_rcnn_r18_multistep.yaml",
        [*BOX, "roi_heads.mask_predictor.mask_fcn_logits"],
    ),
    (
        "keypoint_rcnn_r18",
        "configs/league/shapes_target/keypoint_rcnn_r18_zenith.yaml",
        ["roi_heads.keypoint_predictor.kps_score_lowres"],
    ),
]


def test_cache_key_follows_config_ranks_and_generator(monkeypatch):
    key = pretrain.config_key(SOURCE, [], 2)
    assert len(key) == 12 and key == pretrain.config_key(SOURCE, [], 2)
    assert pretrain.config_key(SOURCE, ["train.epochs=23"], 2) != key
    assert pretrain.config_key(SOURCE, [], 1) != key  # another batch: another model
    assert pretrain.config_key(SOURCE, ["output_dir=elsewhere"], 2) == key  # named by the key
    monkeypatch.setattr(synthetic_variants, "GENERATOR_VERSION", 99)  # other images
    assert pretrain.config_key(SOURCE, [], 2) != key


def test_the_natural_source_is_another_model_of_the_same_classes():
    natural = pretrain.source_config("configs/league/source_natural", "faster_rcnn_r18")
    assert pretrain.config_key(natural, [], 2) != pretrain.config_key(SOURCE, [], 2)
    ours, theirs = (load_config(ROOT / c) for c in (natural, SOURCE))
    assert (ours.data.source, theirs.data.source) == ("natural_source", "shapes_source")
    assert ours.model == theirs.model and ours.train == theirs.train  # only the images differ


def test_source_spec_names_the_run_by_model_and_key():
    spec = pretrain.source_spec(SOURCE, "faster_rcnn_r18", 2, "runs/pretrained")
    key = pretrain.config_key(SOURCE, [], 2)
    assert spec == {
        "config": SOURCE,
        "overrides": [],
        "nproc": 2,
        "run_dir": f"runs/pretrained/faster_rcnn_r18-{key}",
    }
    assert pretrain.weights_path(spec) == f"runs/pretrained/faster_rcnn_r18-{key}/best.pth"
    with pytest.raises(ConfigError, match="source config of model 'nope'"):
        pretrain.source_config("configs/league/source", "nope")


def test_plateau_is_the_last_quarter_gain():
    flat = [[1, 100, 0.30], [2, 200, 0.40], [3, 300, 0.405], [4, 400, 0.41]]
    assert pretrain.plateau(flat)["plateaued"]  # 0.41 - 0.405 (at 300 = 75%)
    assert pretrain.plateau(flat)["last_quarter_gain"] == pytest.approx(0.005)
    climbing = [[1, 100, 0.30], [2, 200, 0.35], [3, 300, 0.38], [4, 400, 0.40]]
    assert not pretrain.plateau(climbing)["plateaued"]
    assert pretrain.plateau([]) == {"last_quarter_gain": None, "plateaued": False}


def test_a_finished_source_model_is_reused_and_a_stopped_one_is_not(tmp_path, capsys):
    # A config that cannot train: were anything trained, the test would fail.
    spec = {"config": "missing.yaml", "overrides": [], "nproc": 1, "run_dir": str(tmp_path / "m")}
    run = tmp_path / "m"
    run.mkdir()
    (run / "best.pth").write_bytes(b"weights")
    assert pretrain.cached_record(spec) is None  # best.pth of a run that did not finish
    record = {**spec, "best_AP": 0.5, "weights": pretrain.weights_path(spec)}
    (run / "pretrain.json").write_text(json.dumps(record))
    assert pretrain.ensure_pretrained(spec, tmp_path / "logs") == record
    assert "cached, nothing to train" in capsys.readouterr().out
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("model, target, layers", TARGETS)
def test_target_configs_fine_tune_from_their_source_checkpoint(tmp_path, model, target, layers):
    source_cfg = load_config(ROOT / pretrain.source_config("configs/league/source", model))
    source = build_model(source_cfg.model)
    path = tmp_path / "best.pth"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)  # as a run's checkpoint
    tuned = build_model(load_config(ROOT / target, [f"model.weights={path}"]).model)
    # torchvision's pretrained build: frozen BatchNorm, stages 2-4 of the ResNet train.
    body = tuned.backbone.body
    assert not any(isinstance(m, nn.BatchNorm2d) for m in tuned.modules())
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}
    ours, theirs = tuned.state_dict(), source.state_dict()
    reinit = [k for k in ours if ours[k].shape != theirs[k].shape]
    assert reinit == [f"{layer}.{p}" for layer in layers for p in ("weight", "bias")]
    kept = [k for k in ours if k not in reinit]
    assert all(torch.equal(ours[k], theirs[k]) for k in kept)  # running stats included


def test_results_folder_gets_the_table_and_merges_the_records(tmp_path):
    records = {
        "faster_rcnn_r18-aaaa": {
            "config": "configs/league/source/faster_rcnn_r18_multistep.yaml",
            "weights": "runs/pretrained/faster_rcnn_r18-aaaa/best.pth",
            "best_AP": 0.58,
            "final_AP": 0.57,
            "iterations": 3072,
            "seconds": 4600.0,
            "last_quarter_gain": 0.06,
            "plateaued": False,
        }
    }
    pretrain.write_results(tmp_path / "out", records)
    assert json.loads((tmp_path / "out" / "pretrain.json").read_text()) == records
    # The same model from another source folder is another record, not a replacement.
    other = {
        **records["faster_rcnn_r18-aaaa"],
        "config": "configs/league/source_natural/faster_rcnn_r18_multistep.yaml",
        "weights": "runs/pretrained/faster_rcnn_r18-bbbb/best.pth",
    }
    table = pretrain.write_results(tmp_path / "out", {"faster_rcnn_r18-bbbb": other})
    merged = json.loads((tmp_path / "out" / "pretrain.json").read_text())
    assert merged == {**records, "faster_rcnn_r18-bbbb": other}  # a later session adds
    lines = (tmp_path / "out" / "pretrain.md").read_text().splitlines()
    assert lines == table.splitlines() and len(lines) == 4
    assert lines[2] == (
        "| faster_rcnn_r18-aaaa | configs/league/source/faster_rcnn_r18_multistep.yaml "
        "| 0.5800 | 0.5700 | 3072 | 4600 | +0.0600 | no |"
    )
