"""The one configuration object: the typed schema, its domain checks, and the public loaders.

The dataclasses below are the schema, fixed by the training/evaluation code that reads it.
`load_config` reads a YAML file (with its `_base_` files and `--set` overrides) through
`zenith_det.config_loader`, converts it to a `Config` and checks every value once here, so the
rest of the package receives typed, valid values. Every problem is a one-line `ConfigError`
naming the file and line (or the `--set` override), the dotted key and what was expected.

Imports only the standard library, `config_loader` and `errors`: every module imports this one.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from zenith_det.config_loader import Origins, dump_yaml, join_key, load_tree, show, to_dataclass
from zenith_det.errors import ConfigError

ARCHS = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2",
    "keypointrcnn_resnet50_fpn",
)
BACKBONES = ("resnet50", "resnet34", "resnet18", "mobilenet_v3_large")
OPTIMIZERS = ("zenith", "zenith_adamw", "sgd", "adamw", "dadapt_sgd", "prodigy", "schedulefree_sgd")
# Optimizers whose learning rate ZENITH's window rule sets each step: no decay schedule.
ZENITH_OPTIMIZERS = ("zenith", "zenith_adamw")
# The automatic-LR baselines of the `baselines` extra (solver.BASELINE_PACKAGES imports them).
BASELINE_OPTIMIZERS = ("dadapt_sgd", "prodigy", "schedulefree_sgd")
# Optimizers that take no decay schedule: ZENITH's, and schedule-free SGD (its own warm-up only).
UNSCHEDULED_OPTIMIZERS = (*ZENITH_OPTIMIZERS, "schedulefree_sgd")
WARMUP_HISTORY = ("include", "exclude")  # optimizer.warmup_history
SIGNALS = ("grad_norm", "momentum_snr")  # optimizer.signal
# data.source: zenith_det.data.sources.SOURCES holds each one (a test checks they agree).
DATA_SOURCES = ("deepforest_trees", "shapes_source", "shapes_target", "natural_source")
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
    # A local file, or a torchvision weights name (`is_weights_name`) fetched into torch's hub
    # cache: a full-model state dict, and an ImageNet backbone state dict.
    weights: str | None = None
    backbone_weights: str | None = None
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
    # Fetch and convert a packaged dataset into `root` if its files are missing: null, or
    # "deepforest_trees" (real aerial photographs with tree-crown boxes; zenith_det/data), or
    # generate one: "shapes_source", "shapes_target" (data/synthetic_variants.py).
    source: str | None = None


@dataclass
class OptimizerConfig:
    """Optimizer choice and its hyper-parameters."""

    name: str = "zenith"
    lr: float = 0.02
    # If set, lr is scaled linearly by the effective batch over base_batch_size:
    # (images_per_gpu * world_size * grad_accum_steps) / base_batch_size.
    base_batch_size: int | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    norm_weight_decay: float | None = None  # None = same as weight_decay
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw, zenith_adamw, prodigy
    # ZENITH window W, zenith and zenith_adamw: iterations, or "epoch" (the iterations of one
    # epoch, after train.max_iters_per_epoch; solver.zenith_window resolves it).
    window: int | str = 100
    # "exclude" (default, chosen by the optimizer league): the window and Z start after
    # schedule.warmup_iters; "include": the warm-up norms enter them too (docs/zenith.md,
    # decision 5). Equal to zenith_det.optim.lr_rule.DEFAULT_WARMUP_HISTORY (a test checks).
    warmup_history: str = "exclude"
    grad_norm_reduce: str = "mean"  # "mean" (DDP) | "sum_squares" (sharded)
    # What ZENITH's window records: "grad_norm" (the paper's rule) or the option "momentum_snr"
    # (the momentum buffer's mean of past gradients against the current one; docs/zenith.md,
    # decision 12). optimizer.name zenith only. Equal to zenith_det.optim.momentum_snr's.
    signal: str = "grad_norm"


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
    # Micro-batches of images_per_gpu per optimizer step: the effective batch is
    # images_per_gpu * world_size * grad_accum_steps, and every iteration count (epochs' steps,
    # warm-up, milestones, logging, checkpoints) counts optimizer steps.
    grad_accum_steps: int = 1
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
    # Also log to <output_dir>/tensorboard/ (rank 0): metrics.jsonl's scalars and, at each
    # evaluation, a few val images with predictions. Off by default: it needs the optional
    # tensorboard package (pip install 'zenith_det[tensorboard]').
    tensorboard: bool = False


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


# `ResNet50_Weights.IMAGENET1K_V1`: a torchvision weights enum and its member (what
# `torchvision.models.get_weight` takes). A path never has this shape unless it is a bare file
# name such as `my_Weights.pth`; write `./my_Weights.pth` to mean the file.
_WEIGHTS_NAME = re.compile(r"[A-Za-z0-9_]+_Weights\.[A-Za-z0-9_]+")


def is_weights_name(value: str) -> bool:
    """True if `value` (model.weights / backbone_weights) names torchvision weights, not a file."""
    return _WEIGHTS_NAME.fullmatch(value) is not None


# --- value checks -------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    return "a number" if isinstance(value, float) else "an integer"


class _Checker:
    """Range and choice checks on a typed Config; a failure names the key's file:line."""

    def __init__(self, cfg: Config, origins: Origins) -> None:
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
    ck.one_of("data.source", DATA_SOURCES, optional=True)
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
    if isinstance(opt.window, str):
        ck.require("optimizer.window", opt.window == "epoch", "an integer >= 1 or 'epoch'")
    else:
        ck.at_least("optimizer.window", 1)
    ck.one_of("optimizer.warmup_history", WARMUP_HISTORY)
    ck.one_of("optimizer.grad_norm_reduce", GRAD_NORM_REDUCE)
    ck.one_of("optimizer.signal", SIGNALS)
    if opt.signal == "momentum_snr":
        only_zenith = "'zenith' with optimizer.signal momentum_snr"
        ck.require("optimizer.name", opt.name == "zenith", only_zenith)
        ck.above("optimizer.momentum", 0)  # the signal is the momentum buffer's
    if opt.name == "sgd" and opt.nesterov:
        ck.above("optimizer.momentum", 0)  # torch's SGD rejects Nesterov without momentum
    _check_baseline_optimizer(ck)


def _check_baseline_optimizer(ck: _Checker) -> None:
    """What the baselines' packages cannot do, refused here instead of ignored there."""
    opt = ck.cfg.optimizer
    if opt.name in BASELINE_OPTIMIZERS and opt.nesterov:  # none of them has a Nesterov variant
        ck.fail(
            "optimizer.nesterov", f"false with optimizer.name '{opt.name}' (no Nesterov variant)"
        )
    if opt.name == "schedulefree_sgd":
        ck.above("optimizer.momentum", 0)  # SGDScheduleFree's interpolation needs 0 < beta < 1
    # DAdaptSGD applies the first group's weight decay to every group.
    same_decay = opt.norm_weight_decay in (None, opt.weight_decay)
    if opt.name == "dadapt_sgd" and not same_decay:
        ck.fail(
            "optimizer.norm_weight_decay",
            "null or optimizer.weight_decay with optimizer.name 'dadapt_sgd' (DAdaptSGD applies "
            "one weight decay to every parameter group)",
        )


def _check_schedule(ck: _Checker) -> None:
    ck.one_of("schedule.name", SCHEDULES)
    name = ck.cfg.optimizer.name
    if name in UNSCHEDULED_OPTIMIZERS and ck.cfg.schedule.name != "none":
        set_at = ck.origins.origins.get("optimizer.name")
        at = f", set at {set_at}" if set_at else ""
        why = "ZENITH sets its own learning rate each step"
        if name not in ZENITH_OPTIMIZERS:
            why = "schedule-free SGD averages its iterates instead of decaying the LR"
        ck.fail(
            "schedule.name",
            f"'none' with optimizer.name '{name}'{at} ({why}; multistep/cosine decay is for"
            " the sgd, adamw, dadapt_sgd and prodigy baselines)",
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
    ck.at_least("train.grad_accum_steps", 1)
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


def _build(data: Any, origins: Origins) -> Config:
    """Raw data -> a typed, fully checked Config."""
    cfg = to_dataclass(Config, data, origins)
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


# The block of a run's config.yaml that records the data's categories (ids, names, keypoint
# names, skeleton) for tools that label predictions: written by training, not read as config.
RECORDED_CATEGORIES = "categories"
_RECORDED_NOTE = (
    "# Recorded by training from the training data, not a setting (load_config skips it):\n"
    "# the names tools/predict.py gives the model's labels.\n"
)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config with its `_base_` files, apply `--set a.b=value` overrides, validate.

    Raises ConfigError (one line: file:line or override, dotted key, expectation) on any problem.
    """
    if isinstance(overrides, str):  # a lone string would otherwise be applied char by char
        overrides = [overrides]
    name = str(path)
    tree = load_tree(name, overrides)
    if isinstance(tree.data, dict):
        tree.data.pop(RECORDED_CATEGORIES, None)  # what training recorded, not a setting
    return _build(tree.data, Origins(name, tree.origins))


def recorded_categories(path: str | Path) -> dict[str, Any] | None:
    """The `categories` block training wrote into a run's config.yaml (plain values), if any.

    `zenith_det.categories.CategoryInfo.from_dict` reads it; `load_config` skips it.
    """
    tree = load_tree(str(path))
    value = tree.data.get(RECORDED_CATEGORIES) if isinstance(tree.data, dict) else None
    return value if isinstance(value, dict) else None


def config_from_dict(d: dict[str, Any], source: str = "<dict>") -> Config:
    """A plain dict (e.g. stored in a checkpoint) -> a validated Config; errors name `source`."""
    return _build(copy.deepcopy(d), Origins(source, {}))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The Config as plain dicts/lists/scalars (YAML-, JSON- and `weights_only`-safe)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path, categories: dict[str, Any] | None = None) -> None:
    """Write the Config as YAML that `load_config` reads back to an equal Config.

    `categories` (`CategoryInfo.to_dict()`, what training saw in the data) is appended as a
    block of its own that `recorded_categories` reads and `load_config` skips.
    """
    from zenith_det import storage  # here: the config layer imports nothing else at module level

    path = Path(path)
    text = dump_yaml(config_to_dict(cfg))
    if categories is not None:
        text += _RECORDED_NOTE + dump_yaml({RECORDED_CATEGORIES: categories})
    with storage.writing(path, "config"):
        path.parent.mkdir(parents=True, exist_ok=True)
    storage.atomic_write_text(path, text, "config")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = join_key(prefix, key)
        flat.update(_flatten(value, path) if isinstance(value, dict) else {path: value})
    return flat


def config_diff(old: Config, new: Config) -> list[str]:
    """`key: old -> new` for every value that differs, in schema order (for resume warnings)."""
    before = _flatten(config_to_dict(old))
    after = _flatten(config_to_dict(new))
    return [
        f"{key}: {show(before[key], None)} -> {show(after[key], None)}"
        for key in before
        if before[key] != after[key]
    ]


def check_data_paths(cfg: Config, need_train: bool = True) -> None:
    """Raise ConfigError naming the key and resolved path of a missing input file or directory.

    Checks the data split(s) (skipped when `data.demo` is true or `data.source` is set: those
    generate or fetch their data into `data.root`) and the local weight files; a torchvision
    weights name is fetched, not checked.
    """
    if not (cfg.data.demo or cfg.data.source):
        _check_data_files(cfg.data, need_train)
    _check_weight_files(cfg.model)


def _check_data_files(data: DataConfig, need_train: bool) -> None:
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


def _check_weight_files(model: ModelConfig) -> None:
    for name in ("weights", "backbone_weights"):
        value = getattr(model, name)
        if not value or is_weights_name(value) or Path(value).is_file():
            continue
        message = f"file not found: {Path(value).resolve()}"
        if "_Weights" in value:
            # Meant as a name but not of its shape (no member, a typo'd separator): say so.
            message += " (nor a torchvision weights name, e.g. ResNet50_Weights.IMAGENET1K_V1)"
        raise ConfigError(None, f"model.{name}", message)


def config_warnings(cfg: Config) -> list[str]:
    """One line for each setting the run cannot honour as written (valid, but likely a slip)."""
    warnings = []
    schedule, epochs = cfg.schedule, cfg.train.epochs
    late = [m for m in schedule.milestones if m >= epochs]
    if schedule.name == "multistep" and late:
        # Epoch m's decay starts at its first iteration; epochs run 0..epochs-1.
        listed = ", ".join(str(m) for m in late)
        verb = "is" if len(late) == 1 else "are"
        warnings.append(
            f"schedule.milestones: {listed} {verb} at or beyond train.epochs ({epochs}), so the"
            " LR never decays there"
        )
    return warnings
