"""Checkpoint safety: only the safe loader, and checkpoints that do not fit fail saying what
differs, whether given to --resume or to model.weights; a changed config on resume is listed."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest
import torch

from tests.reliability.runs import ROOT, config_file, run
from tests.training_setup import tiny_config, write_config
from zenith_det.checkpoint import CheckpointError, load_checkpoint
from zenith_det.config import load_config
from zenith_det.training import run_training


def _torch_load_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "torch"
    ]


def test_every_torch_load_we_ship_is_weights_only():
    files = [*(ROOT / "zenith_det").rglob("*.py"), *(ROOT / "tools").glob("*.py")]
    calls = {
        f"{path.name}:{call.lineno}": call for path in files for call in _torch_load_calls(path)
    }
    assert calls  # checkpoint.py and models.py read files
    for where, call in calls.items():
        safe = [k for k in call.keywords if k.arg == "weights_only"]
        assert safe and isinstance(safe[0].value, ast.Constant) and safe[0].value.value is True, (
            where
        )


class _Payload:
    """What an attacker would pickle: code that runs when the file is loaded."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_checkpoints_holding_code_or_namespaces_are_refused(tmp_path):
    touched = tmp_path / "pwned"
    torch.save({"model": {}, "payload": _Payload(touched)}, tmp_path / "evil.pth")
    # torchvision's reference stores its argparse Namespace: not loadable by the safe loader.
    torch.save({"model": {}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "ref.pth")
    for name in ("evil.pth", "ref.pth"):
        with pytest.raises(CheckpointError, match=f"{name}: cannot read checkpoint"):
            load_checkpoint(tmp_path / name)
    assert not touched.exists()


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory) -> Path:
    """last.pth of a one-iteration Faster R-CNN run with 6 classes."""
    work = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(data_root, work / "run", train={"max_iters_per_epoch": 1})
    run_training(load_config(write_config(cfg, work / "cfg.yaml")))
    return work / "run" / "last.pth"


def _train(cfg: dict, tmp_path: Path, **kwargs) -> dict:
    return run_training(load_config(write_config(cfg, tmp_path / "cfg.yaml")), **kwargs)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            {"fpn_channels": 64},
            "backbone.fpn.inner_blocks.0.0.weight: checkpoint shape (32, 64, 1, 1) != model "
            "shape (64, 64, 1, 1)",
        ),
        ({"arch": "maskrcnn_resnet50_fpn"}, "missing key roi_heads.mask_head."),
    ],
)
@pytest.mark.parametrize("how", ["resume", "weights"])
def test_a_checkpoint_of_another_model_names_the_keys_and_shapes(
    how, model, expected, trained, data_root, tmp_path
):
    cfg = tiny_config(data_root, tmp_path / "run", model=model)
    if how == "weights":
        cfg["model"]["weights"] = str(trained)
    with pytest.raises(CheckpointError, match="does not fit the model") as info:
        _train(cfg, tmp_path, resume=str(trained) if how == "resume" else None)
    assert str(info.value).startswith(f"{trained}: ") and expected in str(info.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_resuming_with_a_changed_config_lists_the_changes(trained, data_root, tmp_path, capfd):
    cfg = tiny_config(
        data_root,
        tmp_path / "run",
        model={"box_detections_per_img": 50},
        optimizer={"lr": 0.02},
        train={"epochs": 2, "max_iters_per_epoch": 1, "log_period": 2},
    )
    summary = _train(cfg, tmp_path, resume=str(trained))
    assert summary["global_step"] == 2
    warning = next(
        line for line in capfd.readouterr().err.splitlines() if "resuming with a config" in line
    )
    for change in (
        "train.epochs: 1 -> 2",
        "train.log_period: 1 -> 2",
        "model.box_detections_per_img: 100 -> 50",
    ):
        assert change in warning, warning
    # Optimizer.load_state_dict brings back the saved LR: the warning says the change is moot.
    assert "optimizer.lr: 0.01 -> 0.02" in warning and "come from the checkpoint" in warning
    groups = load_checkpoint(tmp_path / "run" / "last.pth")["optimizer"]["param_groups"]
    assert groups[0]["initial_lr"] == pytest.approx(0.01)


@pytest.mark.slow
def test_train_cli_reports_unusable_weights_in_one_line(trained, data_root, tmp_path):
    cases = {
        "missing": (str(tmp_path / "nope.pth"), "model.weights: file not found: "),
        "misfit": (
            str(trained),
            "inner_blocks.0.0.weight: checkpoint shape (32, 64, 1, 1) != model",
        ),
    }
    for name, (weights, expected) in cases.items():
        out = tmp_path / name / "run"
        cfg = tiny_config(data_root, out, model={"fpn_channels": 64, "weights": weights})
        result = run(
            ["--config", config_file(cfg, tmp_path, f"{name}.yaml")], tmp_path / name, nproc=1
        )
        assert result.returncode == 2, result.stderr[-2000:]
        (line,) = result.error_lines()
        assert expected in line and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert not out.exists()
