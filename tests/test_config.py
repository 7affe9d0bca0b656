"""zenith_det.config: YAML -> typed Config, `_base_` inheritance, overrides and one-line errors."""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

import pytest

from zenith_det import config_loader
from zenith_det.config import (
    ARCHS,
    Config,
    ConfigError,
    check_data_paths,
    config_diff,
    config_from_dict,
    config_to_dict,
    config_warnings,
    is_weights_name,
    load_config,
    save_config,
)


def write(path: Path, text: str) -> Path:
    """Write a YAML file (creating folders) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    """The one-line message of the ConfigError that loading `path` must raise."""
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults, types, round trips -----------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# only a comment\n", "model:\ntrain:\n"])
def test_empty_file_and_empty_sections_give_defaults(tmp_path: Path, text: str) -> None:
    assert load_config(write(tmp_path / "c.yaml", text)) == Config()


def test_values_are_typed(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        "optimizer:\n  lr: 1\n  weight_decay: 1e-4\nmodel:\n  backbone: resnet18\n"
        "train:\n  clip_grad_norm: null\n",
    )
    cfg = load_config(path)
    # An int is accepted for a float and stored as one; `1e-4` is a float, not YAML 1.1's string.
    assert cfg.optimizer.lr == 1.0 and isinstance(cfg.optimizer.lr, float)
    assert cfg.optimizer.weight_decay == pytest.approx(1e-4)
    assert cfg.model.backbone == "resnet18"
    assert cfg.train.clip_grad_norm is None


def changed_config() -> Config:
    """A Config with a non-default value in every section, including lists and None."""
    cfg = Config()
    cfg.model.arch = "keypointrcnn_resnet50_fpn"
    cfg.model.backbone = "resnet18"
    cfg.model.num_keypoints = 3
    cfg.data.kpt_oks_sigmas = [0.1, 0.2, 0.3]
    cfg.data.keypoint_flip_map = [0, 2, 1]
    cfg.data.root = "2017"  # a string that looks like a number must stay a string
    cfg.optimizer.name = "sgd"
    cfg.optimizer.lr = 1e-10
    cfg.optimizer.betas = [0.8, 0.99]
    cfg.schedule.name = "multistep"
    cfg.schedule.milestones = [3, 5]
    cfg.train.clip_grad_norm = 10.0
    cfg.train.max_iters_per_epoch = 7
    cfg.eval.backend = "faster_coco_eval"
    cfg.output_dir = "runs/x"
    return cfg


def test_save_config_round_trips(tmp_path: Path) -> None:
    cfg = changed_config()
    save_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(tmp_path / "out" / "config.yaml") == cfg


def test_dict_round_trips_and_is_plain() -> None:
    cfg = changed_config()
    d = config_to_dict(cfg)
    assert json.loads(json.dumps(d)) == d  # only plain dicts, lists and scalars
    assert config_from_dict(d) == cfg
    assert config_from_dict(config_to_dict(Config())) == Config()


def test_config_from_dict_validates_and_names_source() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"optimizer": {"lr": -1}}, source="ckpt.pth")
    assert str(info.value) == "ckpt.pth: optimizer.lr: expected a number > 0, got -1.0"
    with pytest.raises(ConfigError, match=r"ckpt\.pth: train\.epoch: unknown key"):
        config_from_dict({"train": {"epoch": 3}}, source="ckpt.pth")


# --- _base_ inheritance -------------------------------------------------------------------------


def test_base_two_levels_relative_paths(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "optimizer:\n  lr: 0.1\n  momentum: 0.8\ntrain:\n  epochs: 5\n")
    write(tmp_path / "sub" / "mid.yaml", "_base_: ../base.yaml\noptimizer:\n  lr: 0.05\n")
    leaf = write(tmp_path / "sub" / "leaf.yaml", "_base_: mid.yaml\ntrain:\n  amp: true\n")
    cfg = load_config(leaf)
    assert cfg.optimizer.lr == 0.05  # mid overrides base
    assert cfg.optimizer.momentum == 0.8  # deep merge keeps the base's sibling key
    assert cfg.train.epochs == 5 and cfg.train.amp is True


def test_base_list_form_later_wins(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "train:\n  epochs: 2\n  seed: 1\n")
    write(tmp_path / "b.yaml", "train:\n  epochs: 3\n")
    child = write(tmp_path / "c.yaml", "_base_: [a.yaml, b.yaml]\ntrain:\n  seed: 9\n")
    cfg = load_config(child)
    assert (cfg.train.epochs, cfg.train.seed) == (3, 9)


def test_base_lists_are_replaced_not_merged(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "optimizer:\n  name: sgd\nschedule:\n  milestones: [1, 2, 3]\n")
    child = write(tmp_path / "c.yaml", "_base_: a.yaml\nschedule:\n  milestones: [4]\n")
    assert load_config(child).schedule.milestones == [4]


def test_base_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "train:\n  epochs: 2\n_base_: a.yaml\n")
    message = error_of(tmp_path / "a.yaml")
    assert "b.yaml:3: _base_: inheritance cycle" in message
    assert message.endswith(
        "a.yaml -> " + str(tmp_path / "b.yaml") + " -> " + str(tmp_path / "a.yaml")
    )


def test_base_missing_and_malformed(tmp_path: Path) -> None:
    child = write(tmp_path / "c.yaml", "# x\n_base_: nope.yaml\n")
    assert "c.yaml:2: _base_: base config not found: " in error_of(child)
    write(child, "_base_: [a.yaml, 3]\n")
    assert "c.yaml:1: _base_: expected a file name or a list of file names" in error_of(child)


def test_error_in_base_names_base_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "optimizer:\n  name: sgd\n  lr: -0.5\n")
    child = write(
        tmp_path / "sub" / "c.yaml", "_base_: ../base.yaml\noptimizer:\n  momentum: 0.5\n"
    )
    message = error_of(child)
    assert message.startswith(f"{tmp_path / 'base.yaml'}:3: optimizer.lr: expected a number > 0")


def test_error_in_child_overriding_base_names_child(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "data:\n  kpt_oks_sigmas: [0.1, 0.2]\n")
    child = write(
        tmp_path / "c.yaml", "_base_: base.yaml\ndata:\n  kpt_oks_sigmas:\n    - 0.1\n    - x\n"
    )
    message = error_of(child)
    assert 'c.yaml:5: data.kpt_oks_sigmas[1]: expected a number, got "x"' in message


# --- overrides ----------------------------------------------------------------------------------


def test_overrides_apply_after_inheritance(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "model:\n  backbone: resnet18\ntrain:\n  epochs: 9\n")
    child = write(tmp_path / "c.yaml", "_base_: base.yaml\n")
    cfg = load_config(
        child,
        [
            "train.epochs=1",
            "model.backbone=null",
            "model.arch=keypointrcnn_resnet50_fpn",
            "model.num_keypoints=2",
            "data.kpt_oks_sigmas=[0.1,0.2]",
            "data.keypoint_flip_map=[1, 0]",
            "optimizer.lr=1e-3",
        ],
    )
    assert cfg.train.epochs == 1 and cfg.model.backbone is None
    assert cfg.data.kpt_oks_sigmas == [0.1, 0.2] and cfg.data.keypoint_flip_map == [1, 0]
    assert cfg.optimizer.lr == pytest.approx(1e-3)


def test_overrides_alone_make_the_data_they_would_merge() -> None:
    overrides = ["optimizer.signal=momentum_snr", "optimizer.betas=[0.9, 0.99]", "train.seed=2"]
    data = config_loader.overrides_tree([*overrides, "optimizer.signal= grad_norm "])
    # YAML reads each value, the last of one key wins, and no file's defaults appear.
    optimizer = {"signal": "grad_norm", "betas": [0.9, 0.99]}
    assert data == {"optimizer": optimizer, "train": {"seed": 2}}
    assert config_loader.overrides_tree([]) == {}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        config_loader.overrides_tree(["optimizer.signal"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs", "--set train.epochs: expected KEY=VALUE"),
        ("=3", "--set =3: expected KEY=VALUE"),
        ("train..epochs=3", "--set train..epochs=3: expected KEY=VALUE"),
        ("optimizer.lr=-1", "--set optimizer.lr=-1: optimizer.lr: expected a number > 0, got -1"),
        ("train.epochs=[1", "--set train.epochs=[1: invalid YAML"),
        ("train.epoch=3", "--set train.epoch=3: train.epoch: unknown key; did you mean 'epochs'?"),
        ("optimzer.lr=0.1", "--set optimzer.lr=0.1: optimzer: unknown key; did you mean"),
        ("model.backbone=vgg", "--set model.backbone=vgg: model.backbone: expected one of"),
        (
            "train.epochs=null",
            "--set train.epochs=null: train.epochs: expected an integer, got null",
        ),
    ],
)
def test_bad_overrides(tmp_path: Path, override: str, expected: str) -> None:
    assert error_of(write(tmp_path / "c.yaml", ""), (override,)).startswith(expected)


# --- file errors: file:line, dotted key and the expectation -------------------------------------


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "train:\n  epochs: 3\n  seed: [1, 2\nmodel:\n  arch: x\n")
    message = error_of(path)
    assert message.startswith(f"{path}:4: invalid YAML")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "train:\n  epochs: 3\n  epochs: 4\n")
    assert error_of(path) == f"{path}:3: train.epochs: duplicate key (first set at line 2)"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "expected a mapping of sections" in error_of(write(tmp_path / "c.yaml", "- 1\n"))


def test_missing_file(tmp_path: Path) -> None:
    assert "config file not found" in error_of(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("optimzer:\n  lr: 0.1\n", "optimzer", "unknown key; did you mean 'optimizer'?"),
        ("train:\n  epoch: 3\n", "train.epoch", "unknown key; did you mean 'epochs'?"),
        (
            "train:\n  zzzz: 3\n",
            "train.zzzz",
            "unknown key; expected one of epochs, images_per_gpu",
        ),
    ],
)
def test_unknown_keys_suggest(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = write(tmp_path / "c.yaml", "# header\n" + text)
    line = 2 if "." not in key else 3
    assert error_of(path).startswith(f"{path}:{line}: {key}: {expected}")


# (section, key, YAML value, expectation fragment): each file puts the bad key on line 3.
BAD_VALUES = [
    # types
    ("train", "epochs", "true", "expected an integer, got true"),
    ("train", "epochs", "2.5", "expected an integer, got 2.5"),
    ("train", "epochs", "null", "expected an integer, got null"),
    ("optimizer", "lr", "fast", 'expected a number, got "fast"'),
    ("optimizer", "lr", ".inf", "expected a finite number"),
    ("model", "arch", "3", "expected a string, got 3"),
    ("train", "amp", "1", "expected true or false, got 1"),
    ("train", "clip_grad_norm", "[1]", "expected a number or null, got [1]"),
    ("schedule", "milestones", "3", "expected a list of integers, got 3"),
    ("model", "weights", "{a: 1}", 'expected a string or null, got {"a": 1}'),
    ("train", "nonsense", "1", "unknown key"),
    # ranges
    ("optimizer", "lr", "-0.1", "expected a number > 0, got -0.1"),
    ("optimizer", "lr", "0", "expected a number > 0, got 0.0"),
    ("optimizer", "window", "0", "expected an integer >= 1, got 0"),
    ("optimizer", "momentum", "1.0", "expected a number in [0, 1), got 1.0"),
    ("optimizer", "momentum", "-0.1", "in [0, 1)"),
    ("optimizer", "weight_decay", "-1e-4", "expected a number >= 0, got -0.0001"),
    ("optimizer", "betas", "[0.9]", "expected two numbers [beta1, beta2], got [0.9]"),
    ("optimizer", "base_batch_size", "0", "expected an integer >= 1 or null"),
    ("train", "epochs", "0", "expected an integer >= 1"),
    ("train", "images_per_gpu", "0", "expected an integer >= 1"),
    ("train", "log_period", "0", "expected an integer >= 1"),
    ("train", "checkpoint_period", "0", "expected an integer >= 1"),
    ("train", "checkpoint_iters", "-1", "expected an integer >= 0"),
    ("train", "keep_last", "0", "expected an integer >= 1"),
    ("train", "eval_period", "-1", "expected an integer >= 0"),
    ("train", "clip_grad_norm", "0", "expected a number > 0 or null, got 0.0"),
    ("train", "dist_timeout_s", "0", "expected a number > 0"),
    ("train", "max_iters_per_epoch", "0", "expected an integer >= 1 or null"),
    ("data", "workers", "-1", "expected an integer >= 0"),
    ("data", "hflip_prob", "1.5", "expected a number in [0, 1], got 1.5"),
    ("data", "aspect_ratio_group_factor", "-2", "expected an integer >= -1"),
    ("model", "min_size", "0", "expected an integer >= 1"),
    ("model", "max_size", "0", "expected an integer >= 1"),
    ("model", "num_classes", "1", "expected an integer >= 2"),
    ("model", "num_keypoints", "0", "expected an integer >= 1"),
    ("model", "trainable_backbone_layers", "6", "expected an integer in [0, 5]"),
    ("schedule", "gamma", "0", "expected a number in (0, 1]"),
    ("schedule", "gamma", "1.5", "expected a number in (0, 1]"),
    ("schedule", "warmup_factor", "0", "expected a number in (0, 1]"),
    ("schedule", "warmup_iters", "-1", "expected an integer >= 0"),
    ("schedule", "milestones", "[3, 2]", "expected strictly increasing epochs, got [3, 2]"),
    ("schedule", "milestones", "[3, 3]", "expected strictly increasing epochs"),
    # choices
    ("model", "arch", "resnet", f"expected one of '{ARCHS[0]}'"),
    ("model", "backbone", "vgg", "'mobilenet_v3_large' or null, got \"vgg\""),
    (
        "optimizer",
        "name",
        "lamb",
        "expected one of 'zenith', 'zenith_adamw', 'sgd', 'adamw', 'dadapt_sgd', 'prodigy', "
        "'schedulefree_sgd', got \"lamb\"",
    ),
    ("optimizer", "grad_norm_reduce", "max", "expected one of 'mean', 'sum_squares'"),
    ("schedule", "name", "step", "expected one of 'none', 'multistep', 'cosine'"),
    ("eval", "backend", "x", "expected one of 'pycocotools', 'faster_coco_eval'"),
    ("train", "device", "tpu", "expected one of 'auto', 'cpu', 'cuda'"),
    ("data", "kpt_oks_sigmas", "[0.1, 0.2]", "expected 17 sigmas (model.num_keypoints)"),
    ("data", "keypoint_flip_map", "[0, 0, 1]", "expected a permutation of 0..16"),
]


@pytest.mark.parametrize(("section", "key", "value", "expected"), BAD_VALUES)
def test_bad_values_name_file_line_key_and_expectation(
    tmp_path: Path, section: str, key: str, value: str, expected: str
) -> None:
    path = write(tmp_path / "c.yaml", f"# header\n{section}:\n  {key}: {value}\n")
    message = error_of(path)
    assert message.startswith(f"{path}:3: {section}.{key}: "), message
    assert expected in message, message


@pytest.mark.parametrize(
    ("text", "key", "line", "expected"),
    [
        ("model:\n  max_size: 500\n  min_size: 800\n", "model.min_size", 3, "<= model.max_size"),
        ("optimizer:\n  betas:\n    - 0.9\n    - 1.0\n", "optimizer.betas[1]", 4, "in [0, 1)"),
        ("schedule:\n  milestones: [0, 2]\n", "schedule.milestones[0]", 2, ">= 1"),
        (
            "data:\n  kpt_oks_sigmas: [0.1, 0, 0.3]\nmodel:\n  num_keypoints: 3\n",
            "data.kpt_oks_sigmas[1]",
            2,
            "> 0",
        ),
        (
            "data:\n  keypoint_flip_map: [1, 2, 0]\nmodel:\n  num_keypoints: 3\n",
            "data.keypoint_flip_map",
            2,
            "i -> j implies j -> i",
        ),
        (
            "model:\n  arch: keypointrcnn_resnet50_fpn\n  num_keypoints: 3\n",
            "data.kpt_oks_sigmas",
            None,
            "a list for 3 keypoints",
        ),
        (
            "optimizer:\n  name: sgd\n  momentum: 0\n  nesterov: true\n",
            "optimizer.momentum",
            3,
            "> 0",
        ),
        ("output_dir: ''\n", "output_dir", 1, "a non-empty directory path"),
    ],
)
def test_cross_field_errors(
    tmp_path: Path, text: str, key: str, line: int | None, expected: str
) -> None:
    path = write(tmp_path / "c.yaml", text)
    where = f"{path}:{line}" if line else str(path)
    message = error_of(path)
    assert message.startswith(f"{where}: {key}: expected"), message
    assert expected in message, message


def test_zenith_rejects_a_decay_schedule(tmp_path: Path) -> None:
    base = write(tmp_path / "base.yaml", "optimizer:\n  name: zenith\n")
    child = write(tmp_path / "c.yaml", "_base_: base.yaml\nschedule:\n  name: multistep\n")
    message = error_of(child)
    assert message.startswith(f"{child}:3: schedule.name: expected 'none' with optimizer.name")
    assert f"set at {base}:2" in message and "ZENITH sets its own learning rate" in message
    # The same schedule is fine for a baseline optimizer.
    assert load_config(child, ["optimizer.name=sgd"]).schedule.name == "multistep"
    assert load_config(child, ["schedule.name=none"]).optimizer.name == "zenith"


def test_config_error_is_one_line_and_pickles() -> None:
    error = ConfigError("c.yaml:3", "optimizer.lr", "expected a number > 0,\ngot -1")
    assert str(error) == "c.yaml:3: optimizer.lr: expected a number > 0, got -1"
    assert isinstance(error, ValueError)
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.where, again.key) == (str(error), "c.yaml:3", "optimizer.lr")


# --- config_diff and check_data_paths -------------------------------------------------------------


def test_config_diff() -> None:
    old, new = Config(), Config()
    assert config_diff(old, new) == []
    new.optimizer.lr = 0.01
    new.model.backbone = "resnet18"
    new.schedule.milestones = [1, 2]
    assert config_diff(old, new) == [
        'model.backbone: null -> "resnet18"',
        "optimizer.lr: 0.02 -> 0.01",
        "schedule.milestones: [16, 22] -> [1, 2]",
    ]


def data_config(root: Path) -> Config:
    """A Config whose data section points at `root`, with every path present."""
    cfg = Config()
    cfg.data.root = str(root)
    for name in ("train2017", "val2017"):
        (root / name).mkdir(parents=True)
    write(root / "annotations" / "instances_train2017.json", "{}")
    write(root / "annotations" / "instances_val2017.json", "{}")
    return cfg


def test_check_data_paths(tmp_path: Path) -> None:
    cfg = data_config(tmp_path / "coco")
    check_data_paths(cfg)
    (tmp_path / "coco" / "annotations" / "instances_train2017.json").unlink()
    with pytest.raises(ConfigError) as info:
        check_data_paths(cfg)
    wanted = tmp_path / "coco" / "annotations" / "instances_train2017.json"
    assert str(info.value) == f"data.train_annotations: file not found: {wanted}"
    check_data_paths(cfg, need_train=False)  # eval-only runs need only the val split
    cfg.data.demo = True
    check_data_paths(cfg)  # the demo generates its data


def test_check_data_paths_missing_root(tmp_path: Path) -> None:
    cfg = Config()
    cfg.data.root = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"^data\.val_images: directory not found: .*nowhere"):
        check_data_paths(cfg, need_train=False)
    with pytest.raises(ConfigError, match="data.root does not exist"):
        check_data_paths(cfg)


# --- weights by path or by torchvision name -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "is_name"),
    [
        ("ResNet50_Weights.IMAGENET1K_V1", True),
        ("ResNet18_Weights.IMAGENET1K_V1", True),
        ("MaskRCNN_ResNet50_FPN_Weights.COCO_V1", True),
        ("ResNet50_Weights.DEFAULT", True),
        ("ResNet50_Weights", False),  # no member: a (missing) file, reported with a hint below
        ("ResNet50_Weights.", False),
        ("./ResNet50_Weights.DEFAULT", False),  # a path prefix means the file
        ("weights/resnet50-0676ba61.pth", False),
        ("resnet50-0676ba61.pth", False),
        ("ResNet50_Weights.IMAGENET1K_V1\n", False),
        ("", False),
    ],
)
def test_is_weights_name(value: str, is_name: bool) -> None:
    assert is_weights_name(value) is is_name


def test_weights_names_load_and_need_no_file(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path / "c.yaml", ""),
        [
            "model.weights=MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
            "model.backbone_weights=ResNet50_Weights.IMAGENET1K_V1",
        ],
    )
    assert cfg.model.weights == "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"
    assert cfg.model.backbone_weights == "ResNet50_Weights.IMAGENET1K_V1"
    cfg.data = data_config(tmp_path / "coco").data
    check_data_paths(cfg)  # names are fetched into the hub cache later, not looked up here


@pytest.mark.parametrize("key", ["weights", "backbone_weights"])
def test_local_weight_files_are_checked(tmp_path: Path, monkeypatch, key: str) -> None:
    monkeypatch.chdir(tmp_path)  # relative weight paths are relative to the working directory
    cfg = data_config(tmp_path / "coco")
    cfg.data.demo = True  # the demo skips the data paths, never the weight files
    setattr(cfg.model, key, "w/r18.pth")
    with pytest.raises(ConfigError) as info:
        check_data_paths(cfg)
    assert str(info.value) == f"model.{key}: file not found: {tmp_path / 'w' / 'r18.pth'}"
    write(tmp_path / "w" / "r18.pth", "")
    check_data_paths(cfg)


def test_weights_name_without_member_is_a_missing_file_with_a_hint(tmp_path: Path) -> None:
    cfg = data_config(tmp_path / "coco")
    cfg.model.backbone_weights = "ResNet50_Weights"
    with pytest.raises(ConfigError) as info:
        check_data_paths(cfg)
    assert str(info.value).startswith("model.backbone_weights: file not found: ")
    assert "nor a torchvision weights name, e.g. ResNet50_Weights.IMAGENET1K_V1" in str(info.value)


# --- zenith_adamw ---------------------------------------------------------------------------------


def test_zenith_adamw_is_accepted_without_a_schedule(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        "optimizer:\n  name: zenith_adamw\n  betas: [0.9, 0.99]\n  window: 20\n"
        "schedule:\n  name: none\n",
    )
    cfg = load_config(path)
    assert (cfg.optimizer.name, cfg.optimizer.betas, cfg.optimizer.window) == (
        "zenith_adamw",
        [0.9, 0.99],
        20,
    )
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_zenith_adamw_rejects_a_decay_schedule(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml", "optimizer:\n  name: zenith_adamw\nschedule:\n  name: cosine\n"
    )
    message = error_of(path)
    assert message.startswith(
        f"{path}:4: schedule.name: expected 'none' with optimizer.name 'zenith_adamw', set at"
        f" {path}:2 (ZENITH sets its own learning rate"
    ), message
    assert load_config(path, ["optimizer.name=adamw"]).schedule.name == "cosine"


def test_zenith_adamw_betas_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "optimizer:\n  name: zenith_adamw\n  betas: [0.9, 1.0]\n")
    assert error_of(path).startswith(f"{path}:3: optimizer.betas[1]: expected a number in [0, 1)")


# --- warnings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "epochs", "expected"),
    [
        ("multistep", 26, []),
        ("multistep", 23, []),
        (
            "multistep",
            22,
            [
                "schedule.milestones: 22 is at or beyond train.epochs (22), so the LR never"
                " decays there"
            ],
        ),
        (
            "multistep",
            12,
            [
                "schedule.milestones: 16, 22 are at or beyond train.epochs (12), so the LR never"
                " decays there"
            ],
        ),
        ("cosine", 12, []),  # cosine ignores milestones
    ],
)
def test_config_warnings_milestones(name: str, epochs: int, expected: list[str]) -> None:
    cfg = Config()
    cfg.optimizer.name = "sgd"
    cfg.schedule.name = name
    cfg.schedule.milestones = [16, 22]
    cfg.train.epochs = epochs
    assert config_warnings(cfg) == expected


def test_default_config_has_no_warnings() -> None:
    assert config_warnings(Config()) == []


def test_loader_knows_no_schema() -> None:
    """config imports config_loader, never the reverse: the loader imports only errors."""
    tree = ast.parse(Path(config_loader.__file__).read_text())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("zenith_det")
    }
    imported |= {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.startswith("zenith_det")
    }
    assert imported == {"zenith_det.errors"}
