"""The one configuration object: YAML -> typed dataclasses, validated once at the edge.

SCHEMA (the dataclasses below) is fixed by the training/evaluation code that reads it.
LOADING/VALIDATION is implemented below the schema: `load_config` reads a YAML file (with its
`_base_` files and `--set` overrides), converts it to a `Config` and checks every value once, so
the rest of the package receives typed, valid values. Every problem is a one-line `ConfigError`
naming the file and line (or the `--set` override), the dotted key and what was expected.

Imports only the standard library and yaml: every module imports this one.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import itertools
import json
import math
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from zenith_det.errors import ConfigError

ARCHS = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2",
    "keypointrcnn_resnet50_fpn",
)
BACKBONES = ("resnet50", "resnet34", "resnet18", "mobilenet_v3_large")
OPTIMIZERS = ("zenith", "sgd", "adamw")
SCHEDULES = ("none", "multistep", "cosine")
EVAL_BACKENDS = ("pycocotools", "faster_coco_eval")
GRAD_NORM_REDUCE = ("mean", "sum_squares")
DEVICES = ("auto", "cpu", "cuda")  # train.device


@dataclass
class ModelConfig:
    """Which R-CNN to build and how big."""

    arch: str = "fasterrcnn_resnet50_fpn"
    # None keeps the arch's own ResNet-50; a smaller name swaps the FPN backbone (CPU runs).
    backbone: str | None = None
    num_classes: int = 91  # includes background; labels are the raw COCO category ids
    num_keypoints: int = 17
    min_size: int = 800
    max_size: int = 1333
    weights: str | None = None  # local file with a full-model state dict; never downloaded
    backbone_weights: str | None = None  # local file with an ImageNet backbone state dict
    trainable_backbone_layers: int | None = None  # None = torchvision's default for the arch
    sync_bn: bool = False
    fpn_channels: int = 256
    box_detections_per_img: int = 100


@dataclass
class DataConfig:
    """Where the COCO-format data lives and how it is loaded."""

    root: str = "data/coco"
    train_images: str = "train2017"
    train_annotations: str = "annotations/instances_train2017.json"
    val_images: str = "val2017"
    val_annotations: str = "annotations/instances_val2017.json"
    workers: int = 4
    aspect_ratio_group_factor: int = 3  # -1 disables grouping
    hflip_prob: float = 0.5
    # Keypoint index each keypoint maps to under a horizontal flip; None = COCO's 17-keypoint map.
    keypoint_flip_map: list[int] | None = None
    # OKS sigmas for keypoint evaluation; None = COCO's 17 sigmas.
    kpt_oks_sigmas: list[float] | None = None
    # Generate the embedded demo dataset into `root` if its annotation files are missing.
    demo: bool = False


@dataclass
class OptimizerConfig:
    """Optimizer choice and its hyper-parameters."""

    name: str = "zenith"
    lr: float = 0.02
    # If set, lr is scaled linearly by (images_per_gpu * world_size) / base_batch_size.
    base_batch_size: int | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    norm_weight_decay: float | None = None  # None = same as weight_decay
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw only
    window: int = 100  # ZENITH window W (iterations)
    grad_norm_reduce: str = "mean"  # "mean" (DDP) | "sum_squares" (sharded)


@dataclass
class ScheduleConfig:
    """LR schedule: warm-up for every optimizer; multistep/cosine decay for baselines only."""

    name: str = "none"
    milestones: list[int] = field(default_factory=lambda: [16, 22])  # epochs
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001


@dataclass
class TrainConfig:
    """The loop: length, batch, precision, periods, reproducibility."""

    epochs: int = 26
    images_per_gpu: int = 2
    amp: bool = False
    clip_grad_norm: float | None = None
    seed: int = 42
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda
    log_period: int = 20  # iterations
    checkpoint_period: int = 1  # epochs
    checkpoint_iters: int = 0  # also checkpoint every N iterations inside an epoch (0 = off)
    keep_last: int = 3  # periodic snapshots kept
    eval_period: int = 1  # epochs (0 = only at the end)
    max_consecutive_nonfinite: int = 20
    dist_timeout_s: float = 1800.0
    max_iters_per_epoch: int | None = None  # truncate epochs (smoke tests, benchmarks)


@dataclass
class EvalConfig:
    """Evaluation settings."""

    backend: str = "pycocotools"
    # 1, as torchvision's reference: a batch pads its images to a common size, which changes the
    # detections near the padded border, so larger batches make mAP depend on the GPU count.
    images_per_gpu: int = 1


@dataclass
class Config:
    """The whole job."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs/default"


def model_task(arch: str) -> str:
    """The task of an arch name: "detection", "instance_segmentation" or "keypoints"."""
    if arch.startswith("maskrcnn"):
        return "instance_segmentation"
    if arch.startswith("keypointrcnn"):
        return "keypoints"
    return "detection"


def iou_types_for(arch: str) -> list[str]:
    """COCO iou types evaluated for an arch: bbox always, plus segm or keypoints."""
    task = model_task(arch)
    if task == "instance_segmentation":
        return ["bbox", "segm"]
    if task == "keypoints":
        return ["bbox", "keypoints"]
    return ["bbox"]


def primary_metric(arch: str) -> str:
    """The iou type whose AP picks best.pth: segm for Mask, keypoints for Keypoint, else bbox."""
    return iou_types_for(arch)[-1]


# --- loading and validation -------------------------------------------------------------------




class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.1 makes it a string without a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)

_MERGE_TAG = "tag:yaml.org,2002:merge"
_UNSET: Any = object()


@dataclass
class _Tree:
    """Raw config data plus where each dotted key came from ("file:line" or "--set k=v")."""

    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)


class _Origins:
    """Looks up where a dotted key was set, falling back to the top-level source."""

    def __init__(self, default: str, origins: dict[str, str]) -> None:
        self.default = default
        self.origins = origins

    def of(self, key: str) -> str:
        """The "file:line" of `key`, of the list holding it, or the top-level source."""
        probe = key
        while probe not in self.origins:
            parent = re.sub(r"\[\d+\]$", "", probe)
            if parent == probe:
                return self.default
            probe = parent
        return self.origins[probe]

    def fail(self, key: str, expected: str, value: Any) -> NoReturn:
        """Raise the one-line error for `key`: expected this, got that."""
        raise ConfigError(self.of(key), key or None, f"expected {expected}, got {_show(value)}")


def _show(value: Any, limit: int | None = 80) -> str:
    """A value as the user would write it (null, true, "text", [1, 2]), shortened for messages."""
    text = json.dumps(value, default=str)
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _is_under(key: str, path: str) -> bool:
    return key == path or key.startswith((f"{path}.", f"{path}["))


# --- YAML files, `_base_` inheritance and `--set` overrides ----------------------------------


def _yaml_error(exc: yaml.YAMLError, name: str, with_line: bool = True) -> ConfigError:
    """A ConfigError at the line yaml points to (its problem_mark), with yaml's own complaint."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{name}:{mark.line + 1}" if with_line and mark is not None else name
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context else problem
    return ConfigError(where, None, f"invalid YAML: {detail}")


def _record_lines(node: yaml.Node, path: str, name: str, lines: dict[str, str]) -> None:
    """Record "name:line" for every key path and list item under `node`; reject duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = _join(path, key_node.value)
            line = key_node.start_mark.line + 1
            if key in first:
                # yaml would silently keep the last one; a repeated key is almost always a slip.
                message = f"duplicate key (first set at line {first[key]})"
                raise ConfigError(f"{name}:{line}", key, message)
            first[key] = line
            lines[key] = f"{name}:{line}"
            _record_lines(value_node, key, name, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = f"{path}[{index}]"
            lines[key] = f"{name}:{item.start_mark.line + 1}"
            _record_lines(item, key, name, lines)


def _parse_yaml(text: str, name: str) -> tuple[Any, dict[str, str]]:
    """YAML text -> (plain data, {dotted key: "name:line"})."""
    lines: dict[str, str] = {}
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, name) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines
        _record_lines(node, "", name, lines)
        return loader.construct_document(node), lines
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, name) from None
    finally:
        loader.dispose()


def _read_tree(name: str) -> _Tree:
    """One YAML file as a tree (its `_base_` still inside)."""
    try:
        text = Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(name, None, f"config file not found ({Path(name).resolve()})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, None, f"cannot read config file: {exc}") from None
    data, lines = _parse_yaml(text, name)
    if data is None:  # an empty file (or only comments) means all defaults
        data = {}
    if not isinstance(data, dict):
        expected = "a mapping of sections (model:, data:, optimizer:, ...) at the top level"
        raise ConfigError(name, None, f"expected {expected}, got {_show(data)}")
    return _Tree(data, lines)


def _drop_origins(origins: dict[str, str], path: str) -> None:
    for key in [key for key in origins if _is_under(key, path)]:
        del origins[key]


def _merge(dst: _Tree, src: _Tree, prefix: str = "") -> None:
    """Deep-merge `src` into `dst`: mappings merge key by key, anything else is replaced."""
    dst_data = _lookup(dst.data, prefix)
    for key, value in _lookup(src.data, prefix).items():
        path = _join(prefix, str(key))
        old = dst_data.get(key)
        if isinstance(old, dict) and (isinstance(value, dict) or value is None):
            # A null section (`model:` with every key commented out) keeps what the base set.
            if path in src.origins:
                dst.origins[path] = src.origins[path]
            if value:
                _merge(dst, src, path)
            continue
        dst_data[key] = copy.deepcopy(value)
        _drop_origins(dst.origins, path)
        dst.origins.update((k, v) for k, v in src.origins.items() if _is_under(k, path))


def _lookup(data: dict[str, Any], path: str) -> dict[str, Any]:
    """The mapping at dotted `path` (only mapping keys, no list indices) inside `data`."""
    for part in path.split(".") if path else ():
        data = data[part]
    return data


def _base_names(value: Any, where: str) -> list[str]:
    """The `_base_` entry as a list of file names."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        expected = "a file name or a list of file names"
        raise ConfigError(where, "_base_", f"expected {expected}, got {_show(value)}")
    return names


def _base_path(name: str, base: str, where: str, chain: tuple[str, ...]) -> str:
    """A `_base_` entry resolved relative to the including file; checks existence and cycles."""
    path = os.path.normpath(os.path.join(os.path.dirname(name), os.path.expanduser(base)))
    if Path(path).resolve() in {Path(n).resolve() for n in chain}:
        cycle = " -> ".join((*chain, path))
        raise ConfigError(where, "_base_", f"inheritance cycle: {cycle}")
    if not Path(path).is_file():
        raise ConfigError(where, "_base_", f"base config not found: {path}")
    return path


def _load_tree(name: str, chain: tuple[str, ...] = ()) -> _Tree:
    """A file merged over its `_base_` files, recursively: later bases win, the file wins."""
    chain = (*chain, name)
    tree = _read_tree(name)
    where = tree.origins.get("_base_", name)
    bases = _base_names(tree.data.pop("_base_", None), where)
    _drop_origins(tree.origins, "_base_")
    merged = _Tree()
    for base in bases:
        _merge(merged, _load_tree(_base_path(name, base, where, chain), chain))
    _merge(merged, tree)
    return merged


def _tag_origins(value: Any, path: str, where: str, origins: dict[str, str]) -> None:
    """Mark `path` and everything inside `value` as coming from `where`."""
    origins[path] = where
    if isinstance(value, dict):
        for key, item in value.items():
            _tag_origins(item, _join(path, str(key)), where, origins)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _tag_origins(item, f"{path}[{index}]", where, origins)


def _apply_override(tree: _Tree, text: str) -> None:
    """Merge one `--set a.b=value` (value read as YAML) into the tree."""
    where = f"--set {text}"
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        message = "expected KEY=VALUE with a dotted key, e.g. optimizer.lr=0.01"
        raise ConfigError(where, None, message)
    try:
        value = yaml.load(raw, Loader=_Loader)  # _Loader is a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, where, with_line=False) from None
    origins: dict[str, str] = {}
    _tag_origins(value, ".".join(parts), where, origins)
    for depth in range(len(parts) - 1, 0, -1):
        origins[".".join(parts[:depth])] = where
    for part in reversed(parts):
        value = {part: value}
    _merge(tree, _Tree(value, origins))


# --- raw data -> typed dataclasses --------------------------------------------------------------

_SCALAR_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURAL_NAMES = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """The resolved type of every field of a schema dataclass (annotations are strings here)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _optional_inner(tp: Any) -> Any | None:
    """`X` for `X | None`, else None."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        inner = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return inner[0]
    return None


def _describe(tp: Any) -> str:
    """What a field type accepts, in words: "an integer", "a list of numbers or null"."""
    inner = _optional_inner(tp)
    if inner is not None:
        return f"{_describe(inner)} or null"
    if typing.get_origin(tp) is list:
        return f"a list of {_PLURAL_NAMES[typing.get_args(tp)[0]]}"
    return _SCALAR_NAMES[tp]


def _unknown_key(key: str, allowed: Sequence[str], where: str, path: str) -> ConfigError:
    """An unknown-key error with a did-you-mean suggestion (or the list of known keys)."""
    close = difflib.get_close_matches(key, list(allowed), n=1)
    if close:
        return ConfigError(where, path, f"unknown key; did you mean '{close[0]}'?")
    return ConfigError(where, path, f"unknown key; expected one of {', '.join(allowed)}")


def _convert_section(cls: type, value: Any, prefix: str, origins: _Origins) -> Any:
    """A mapping -> the dataclass `cls`; missing keys keep their defaults."""
    if value is None:  # `train:` with every key commented out
        value = {}
    if not isinstance(value, dict):
        origins.fail(prefix, "a mapping of keys", value)
    types_ = _field_types(cls)
    kwargs = {}
    for key, item in value.items():
        path = _join(prefix, str(key))
        if key not in types_:
            raise _unknown_key(str(key), list(types_), origins.of(path), path)
        kwargs[key] = _convert(types_[key], item, path, origins)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, path: str, origins: _Origins) -> Any:
    """One raw value -> the field's type, or a ConfigError naming what was expected."""
    if dataclasses.is_dataclass(tp):
        return _convert_section(tp, value, path, origins)
    inner = _optional_inner(tp)
    if value is None:
        if inner is None:
            origins.fail(path, _describe(tp), value)
        return None
    base = tp if inner is None else inner
    if typing.get_origin(base) is list:
        if not isinstance(value, (list, tuple)):
            origins.fail(path, _describe(tp), value)
        (item_tp,) = typing.get_args(base)
        return [_convert(item_tp, v, f"{path}[{i}]", origins) for i, v in enumerate(value)]
    return _convert_scalar(base, value, path, origins, _describe(tp))


def _convert_scalar(tp: type, value: Any, path: str, origins: _Origins, expected: str) -> Any:
    """bool / int / float / str; bool is not an int, an int is a float, floats must be finite."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = is_number and isinstance(value, int)
    elif tp is float:
        if is_number and not math.isfinite(value):
            origins.fail(path, "a finite number", value)
        ok = is_number
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:  # a schema field of a type this loader does not know: a bug here, not in the YAML
        raise TypeError(f"config field {path} has unsupported type {tp!r}")
    if not ok:
        origins.fail(path, expected, value)
    return value


# --- value checks -------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    return "a number" if isinstance(value, float) else "an integer"


class _Checker:
    """Range and choice checks on a typed Config; a failure names the key's file:line."""

    def __init__(self, cfg: Config, origins: _Origins) -> None:
        self.cfg = cfg
        self.origins = origins

    def get(self, key: str) -> Any:
        """The value at a dotted key such as `optimizer.betas[1]`."""
        value: Any = self.cfg
        for name, index in re.findall(r"(\w+)(?:\[(\d+)\])?", key):
            value = getattr(value, name)
            if index:
                value = value[int(index)]
        return value

    def fail(self, key: str, expected: str) -> NoReturn:
        """Raise: `key` should have been `expected`."""
        self.origins.fail(key, expected, self.get(key))

    def require(self, key: str, ok: bool, expected: str) -> None:
        """Fail unless `ok`."""
        if not ok:
            self.fail(key, expected)

    def at_least(self, key: str, low: float, optional: bool = False) -> None:
        """value >= low (or None when optional)."""
        value = self.get(key)
        if not (optional and value is None):
            or_null = " or null" if optional else ""
            self.require(key, value >= low, f"{_kind(value)} >= {low}{or_null}")

    def above(self, key: str, low: float, optional: bool = False) -> None:
        """value > low (or None when optional)."""
        value = self.get(key)
        if not (optional and value is None):
            or_null = " or null" if optional else ""
            self.require(key, value > low, f"{_kind(value)} > {low}{or_null}")

    def between(
        self, key: str, low: float, high: float, low_open: bool = False, high_open: bool = False
    ) -> None:
        """value in the interval; open ends exclude the bound: "[0, 1)"."""
        value = self.get(key)
        ok = (low < value if low_open else low <= value) and (
            value < high if high_open else value <= high
        )
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        self.require(key, ok, f"{_kind(value)} in {interval}")

    def one_of(self, key: str, allowed: Sequence[str], optional: bool = False) -> None:
        """value is one of `allowed` (or None when optional)."""
        value = self.get(key)
        if not (optional and value is None):
            choices = ", ".join(f"'{a}'" for a in allowed) + (" or null" if optional else "")
            self.require(key, value in allowed, f"one of {choices}")


def _check_model(ck: _Checker) -> None:
    model = ck.cfg.model
    ck.one_of("model.arch", ARCHS)
    ck.one_of("model.backbone", BACKBONES, optional=True)
    ck.at_least("model.num_classes", 2)  # background + at least one class
    ck.at_least("model.num_keypoints", 1)
    ck.at_least("model.min_size", 1)
    ck.at_least("model.max_size", 1)
    ck.require(
        "model.min_size",
        model.min_size <= model.max_size,
        f"an integer <= model.max_size ({model.max_size})",
    )
    if model.trainable_backbone_layers is not None:
        # torchvision's limits: 5 ResNet stages, 6 MobileNetV3 stages.
        top = 6 if model.backbone == "mobilenet_v3_large" else 5
        ck.between("model.trainable_backbone_layers", 0, top)
    ck.at_least("model.fpn_channels", 1)
    ck.at_least("model.box_detections_per_img", 1)


def _check_keypoints(ck: _Checker) -> None:
    num = ck.cfg.model.num_keypoints
    sigmas = ck.cfg.data.kpt_oks_sigmas
    flip = ck.cfg.data.keypoint_flip_map
    if sigmas is not None:
        ck.require("data.kpt_oks_sigmas", len(sigmas) == num, f"{num} sigmas (model.num_keypoints)")
        for index in range(num):
            ck.above(f"data.kpt_oks_sigmas[{index}]", 0)
    if flip is not None:
        permutation = f"a permutation of 0..{num - 1} (model.num_keypoints is {num})"
        ck.require("data.keypoint_flip_map", sorted(flip) == list(range(num)), permutation)
        # Flipping twice is the identity, so the map must be its own inverse.
        involution = all(flip[flip[i]] == i for i in range(num))
        ck.require("data.keypoint_flip_map", involution, "a map where i -> j implies j -> i")
    if model_task(ck.cfg.model.arch) == "keypoints" and num != 17:
        # The None defaults are COCO's 17-keypoint tables; another count needs its own.
        needed = f"a list for {num} keypoints (the default is COCO's 17)"
        ck.require("data.kpt_oks_sigmas", sigmas is not None, needed)
        ck.require("data.keypoint_flip_map", flip is not None, needed)


def _check_data(ck: _Checker) -> None:
    ck.at_least("data.workers", 0)
    ck.at_least("data.aspect_ratio_group_factor", -1)  # -1 disables grouping
    ck.between("data.hflip_prob", 0, 1)
    _check_keypoints(ck)


def _check_optimizer(ck: _Checker) -> None:
    opt = ck.cfg.optimizer
    ck.one_of("optimizer.name", OPTIMIZERS)
    ck.above("optimizer.lr", 0)
    ck.at_least("optimizer.base_batch_size", 1, optional=True)
    ck.between("optimizer.momentum", 0, 1, high_open=True)
    ck.at_least("optimizer.weight_decay", 0)
    ck.at_least("optimizer.norm_weight_decay", 0, optional=True)
    ck.require("optimizer.betas", len(opt.betas) == 2, "two numbers [beta1, beta2]")
    ck.between("optimizer.betas[0]", 0, 1, high_open=True)
    ck.between("optimizer.betas[1]", 0, 1, high_open=True)
    ck.at_least("optimizer.window", 1)
    ck.one_of("optimizer.grad_norm_reduce", GRAD_NORM_REDUCE)
    if opt.name == "sgd" and opt.nesterov:
        ck.above("optimizer.momentum", 0)  # torch's SGD rejects Nesterov without momentum


def _check_schedule(ck: _Checker) -> None:
    ck.one_of("schedule.name", SCHEDULES)
    if ck.cfg.optimizer.name == "zenith" and ck.cfg.schedule.name != "none":
        set_at = ck.origins.origins.get("optimizer.name")
        at = f", set at {set_at}" if set_at else ""
        ck.fail(
            "schedule.name",
            f"'none' with optimizer.name 'zenith'{at} (ZENITH sets its own learning rate each"
            " step; multistep/cosine decay is for the sgd/adamw baselines)",
        )
    milestones = ck.cfg.schedule.milestones
    for index in range(len(milestones)):
        ck.at_least(f"schedule.milestones[{index}]", 1)
    increasing = all(a < b for a, b in itertools.pairwise(milestones))
    ck.require("schedule.milestones", increasing, "strictly increasing epochs")
    ck.between("schedule.gamma", 0, 1, low_open=True)
    ck.at_least("schedule.warmup_iters", 0)
    ck.between("schedule.warmup_factor", 0, 1, low_open=True)


def _check_train(ck: _Checker) -> None:
    ck.at_least("train.epochs", 1)
    ck.at_least("train.images_per_gpu", 1)
    ck.above("train.clip_grad_norm", 0, optional=True)
    ck.at_least("train.seed", 0)
    ck.one_of("train.device", DEVICES)
    ck.at_least("train.log_period", 1)
    ck.at_least("train.checkpoint_period", 1)
    ck.at_least("train.checkpoint_iters", 0)
    ck.at_least("train.keep_last", 1)
    ck.at_least("train.eval_period", 0)
    ck.at_least("train.max_consecutive_nonfinite", 1)
    ck.above("train.dist_timeout_s", 0)
    ck.at_least("train.max_iters_per_epoch", 1, optional=True)


def _check_rest(ck: _Checker) -> None:
    ck.one_of("eval.backend", EVAL_BACKENDS)
    ck.at_least("eval.images_per_gpu", 1)
    ck.require("output_dir", bool(ck.cfg.output_dir), "a non-empty directory path")


def _build(data: Any, origins: _Origins) -> Config:
    """Raw data -> a typed, fully checked Config."""
    cfg = _convert_section(Config, data, "", origins)
    checker = _Checker(cfg, origins)
    for check in (
        _check_model,
        _check_data,
        _check_optimizer,
        _check_schedule,
        _check_train,
        _check_rest,
    ):
        check(checker)
    return cfg


# --- public API -----------------------------------------------------------------------------------


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config with its `_base_` files, apply `--set a.b=value` overrides, validate.

    Raises ConfigError (one line: file:line or override, dotted key, expectation) on any problem.
    """
    if isinstance(overrides, str):  # a lone string would otherwise be applied char by char
        overrides = [overrides]
    name = str(path)
    tree = _load_tree(name)
    for text in overrides:
        _apply_override(tree, text)
    return _build(tree.data, _Origins(name, tree.origins))


def config_from_dict(d: dict[str, Any], source: str = "<dict>") -> Config:
    """A plain dict (e.g. stored in a checkpoint) -> a validated Config; errors name `source`."""
    return _build(copy.deepcopy(d), _Origins(source, {}))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The Config as plain dicts/lists/scalars (YAML-, JSON- and `weights_only`-safe)."""
    return dataclasses.asdict(cfg)


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing sections as blocks and lists inline (`betas: [0.9, 0.999]`)."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, True)
)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the Config as YAML that `load_config` reads back to an equal Config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False)
    path.write_text(text, encoding="utf-8")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = _join(prefix, key)
        flat.update(_flatten(value, path) if isinstance(value, dict) else {path: value})
    return flat


def config_diff(old: Config, new: Config) -> list[str]:
    """`key: old -> new` for every value that differs, in schema order (for resume warnings)."""
    before = _flatten(config_to_dict(old))
    after = _flatten(config_to_dict(new))
    return [
        f"{key}: {_show(before[key], None)} -> {_show(after[key], None)}"
        for key in before
        if before[key] != after[key]
    ]


def check_data_paths(cfg: Config, need_train: bool = True) -> None:
    """Raise ConfigError naming the key and resolved path of a missing image dir or annotation file.

    Skipped when `data.demo` is true: the demo generates its data into `data.root`.
    """
    data = cfg.data
    if data.demo:
        return
    root = Path(data.root).expanduser()
    wanted = [("val_images", True), ("val_annotations", False)]
    if need_train:
        wanted = [("train_images", True), ("train_annotations", False), *wanted]
    for name, is_dir in wanted:
        relative = Path(getattr(data, name)).expanduser()
        path = (root / relative).resolve()
        if path.is_dir() if is_dir else path.is_file():
            continue
        message = f"{'directory' if is_dir else 'file'} not found: {path}"
        if not relative.is_absolute() and not root.is_dir():
            message += f" (data.root does not exist: {root.resolve()})"
        raise ConfigError(None, f"data.{name}", message)
