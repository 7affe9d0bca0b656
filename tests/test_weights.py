"""Weights by torchvision name, offline: a temporary TORCH_HOME seeded with generated files.

torch.hub checks a file's hash only when it downloads it, so a generated state dict saved under
torchvision's exact file name in `$TORCH_HOME/hub/checkpoints` is what torchvision's own builders
load too; that lets us compare our models with theirs. The network is blocked (an HTTPS proxy on
a closed local port), so an uncached name fails the way it does on an offline machine.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet18_Weights,
    ResNet50_Weights,
    get_weight,
)
from torchvision.models.detection import (
    FasterRCNN,
    FasterRCNN_ResNet50_FPN_Weights,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet50_fpn_v2,
    keypointrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn,
)
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d

from tests.training_setup import make_tiny_dataset
from zenith_det.checkpoint import CheckpointError, load_checkpoint
from zenith_det.config import ModelConfig
from zenith_det.distributed import get_logger
from zenith_det.errors import ConfigError
from zenith_det.models import build_model
from zenith_det.weights import cached_file, fetch_weights

ROOT = Path(__file__).resolve().parents[1]
NO_NETWORK = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
BOX_PREDICTOR = [
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
]


_COCO_BUILDERS = {
    "FasterRCNN_ResNet50_FPN_Weights.COCO_V1": fasterrcnn_resnet50_fpn,
    "MaskRCNN_ResNet50_FPN_Weights.COCO_V1": maskrcnn_resnet50_fpn,
}


def _generated_state(name: str) -> dict[str, torch.Tensor]:
    """A seeded random model's state dict with the keys and shapes of the real file."""
    torch.manual_seed(123)
    if name in _COCO_BUILDERS:
        model = _COCO_BUILDERS[name](weights=None, weights_backbone=None)
        # Trained with frozen BatchNorm, the real files have no batch counters.
        return {k: v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    model = torchvision.models.get_model(name.split("_Weights")[0].lower(), weights=None)
    _calibrate_batchnorm(model)
    return model.state_dict()


def _calibrate_batchnorm(model: torch.nn.Module) -> None:
    """Give BatchNorm the statistics of its own inputs, as a trained classifier's have.

    Frozen in the detector, they must normalise what the random convolutions produce, or
    activations grow layer by layer and training overflows; the affine terms move away from
    their ones and zeros so that "equals the file" cannot pass by coincidence.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = None  # a plain average over the batches below
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.1, 0.1)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(4, 3, 96, 96))


@pytest.fixture(scope="session")
def weight_store(tmp_path_factory):
    """Generated files under torchvision's names, made once per session on first use."""
    store = tmp_path_factory.mktemp("weight_store")

    def get(name: str) -> Path:
        path = store / cached_file(get_weight(name)).name
        if not path.is_file():
            torch.save(_generated_state(name), path)
        return path

    return get


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME (torch.hub.get_dir reads it) on a machine without network."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for key, value in NO_NETWORK.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    return home


@pytest.fixture
def seed_cache(torch_home, weight_store):
    """Put generated files into the temporary hub cache by name; returns their cache paths."""

    def seed(*names: str) -> list[Path]:
        paths = []
        for name in names:
            target = cached_file(get_weight(name))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(weight_store(name), target)
            paths.append(target)
        return paths

    return seed


@pytest.fixture
def log_lines():
    """INFO lines of the package logger, whatever handlers earlier tests configured."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = get_logger()
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _small(arch: str = "fasterrcnn_resnet50_fpn", **kw) -> ModelConfig:
    base = dict(arch=arch, backbone="resnet18", fpn_channels=32, num_classes=5, num_keypoints=5)
    return ModelConfig(**{**base, "min_size": 64, "max_size": 96, **kw})


def _assert_same_model(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    types = [(n, type(m)) for n, m in ours.named_modules()]
    assert types == [(n, type(m)) for n, m in theirs.named_modules()]
    flags = {n: p.requires_grad for n, p in ours.named_parameters()}
    assert flags == {n: p.requires_grad for n, p in theirs.named_parameters()}
    theirs_state = theirs.state_dict()
    assert list(ours.state_dict()) == list(theirs_state)
    for key, value in ours.state_dict().items():
        assert torch.equal(value, theirs_state[key]), key


def _torchvision_resnet18_fpn(num_classes: int) -> torch.nn.Module:
    backbone = resnet_fpn_backbone(
        backbone_name="resnet18", weights=ResNet18_Weights.IMAGENET1K_V1, trainable_layers=3
    )
    return FasterRCNN(backbone, num_classes=num_classes, min_size=64, max_size=96)


def _torchvision_mobilenet(num_classes: int) -> torch.nn.Module:
    return fasterrcnn_mobilenet_v3_large_fpn(
        weights=None,
        weights_backbone=MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        num_classes=num_classes,
        min_size=64,
        max_size=96,
    )


@pytest.mark.parametrize(
    "backbone,name,theirs",
    [
        ("resnet18", "ResNet18_Weights.IMAGENET1K_V1", _torchvision_resnet18_fpn),
        ("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V1", _torchvision_mobilenet),
    ],
)
def test_small_backbone_by_name_is_torchvisions_pretrained_build(
    seed_cache, backbone, name, theirs
):
    seed_cache(name)
    torch.manual_seed(5)
    ours = build_model(
        _small(backbone=backbone, fpn_channels=256, num_classes=7, backbone_weights=name)
    )
    torch.manual_seed(5)
    _assert_same_model(ours, theirs(7))
    assert any(isinstance(m, FrozenBatchNorm2d) for m in ours.backbone.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ours.modules())


_R50_BUILDERS = {
    "fasterrcnn_resnet50_fpn": fasterrcnn_resnet50_fpn,
    "maskrcnn_resnet50_fpn": maskrcnn_resnet50_fpn,
    "keypointrcnn_resnet50_fpn": keypointrcnn_resnet50_fpn,
    "fasterrcnn_resnet50_fpn_v2": fasterrcnn_resnet50_fpn_v2,  # BatchNorm stays, 3 stages train
}


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(_R50_BUILDERS))
def test_resnet50_by_name_is_torchvisions_weights_backbone_build(seed_cache, arch):
    seed_cache("ResNet50_Weights.IMAGENET1K_V1")
    torch.manual_seed(5)
    cfg = ModelConfig(arch=arch, num_classes=3, backbone_weights="ResNet50_Weights.IMAGENET1K_V1")
    ours = build_model(cfg)
    torch.manual_seed(5)
    theirs = _R50_BUILDERS[arch](
        weights=None, weights_backbone=ResNet50_Weights.IMAGENET1K_V1, num_classes=3
    )
    _assert_same_model(ours, theirs)


def test_backbone_by_name_equals_file_frozen_stages_and_bn(seed_cache):
    (path,) = seed_cache("ResNet18_Weights.IMAGENET1K_V1")
    by_name = build_model(_small(backbone_weights="ResNet18_Weights.IMAGENET1K_V1"))
    by_file = build_model(_small(backbone_weights=str(path)))
    imagenet = torch.load(path, weights_only=True)
    body = by_name.backbone.body
    for key, value in body.state_dict().items():
        assert torch.equal(value, imagenet[key]), key
        assert torch.equal(value, by_file.backbone.body.state_dict()[key]), key
    assert isinstance(body.bn1, FrozenBatchNorm2d) and isinstance(
        body.layer4[0].bn1, FrozenBatchNorm2d
    )
    flags = {n.split(".")[0]: p.requires_grad for n, p in body.named_parameters()}
    assert flags == {
        "conv1": False,
        "layer1": False,
        "layer2": True,
        "layer3": True,
        "layer4": True,
    }
    five = build_model(_small(backbone_weights=str(path), trainable_backbone_layers=5))
    assert all(p.requires_grad for p in five.backbone.body.parameters())


def test_empty_cache_is_one_line_naming_file_folder_and_url(torch_home):
    with pytest.raises(CheckpointError) as info:
        build_model(_small(backbone_weights="ResNet18_Weights.IMAGENET1K_V1"))
    message = str(info.value)
    folder = torch_home / "hub" / "checkpoints"
    assert "\n" not in message
    assert f"resnet18-f37072fd.pth is not in {folder}" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert not any(folder.iterdir())  # no half-written file left behind


@pytest.mark.parametrize(
    "cfg,key,fragments",
    [
        (
            ModelConfig(backbone_weights="ResNet18_Weights.IMAGENET1K_V1"),
            "model.backbone_weights",
            ["does not fit model.backbone resnet50", "ResNet50_Weights.IMAGENET1K_V1"],
        ),
        (
            _small(backbone="resnet34", backbone_weights="ResNet50_Weights.DEFAULT"),
            "model.backbone_weights",
            ["does not fit model.backbone resnet34", "ResNet34_Weights.IMAGENET1K_V1"],
        ),
        (
            ModelConfig(
                arch="maskrcnn_resnet50_fpn", weights="KeypointRCNN_ResNet50_FPN_Weights.COCO_V1"
            ),
            "model.weights",
            [
                "does not fit model.arch maskrcnn_resnet50_fpn",
                "MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
            ],
        ),
        (
            _small(weights="FasterRCNN_ResNet50_FPN_Weights.COCO_V1"),
            "model.weights",
            ["model.backbone resnet18", "set model.backbone: null and model.fpn_channels: 256"],
        ),
        (
            ModelConfig(backbone_weights="ResNet50_Weights.IMAGENET9"),
            "model.backbone_weights",
            ["unknown torchvision weights", "ResNet50_Weights.IMAGENET1K_V2"],
        ),
    ],
)
def test_names_that_do_not_fit_fail_before_any_fetch(torch_home, cfg, key, fragments):
    with pytest.raises(ConfigError) as info:
        build_model(cfg)
    assert info.value.key == key
    for fragment in fragments:
        assert fragment in str(info.value)
    assert not torch_home.exists()


@pytest.mark.slow
def test_coco_weights_by_name_fine_tune_to_six_classes(seed_cache, log_lines):
    (path,) = seed_cache("FasterRCNN_ResNet50_FPN_Weights.COCO_V1")
    cfg = ModelConfig(num_classes=6, weights="FasterRCNN_ResNet50_FPN_Weights.COCO_V1")
    torch.manual_seed(9)
    model = build_model(cfg)
    torch.manual_seed(9)
    fresh = build_model(cfg, load_weights=False)
    coco = torch.load(path, weights_only=True)
    for key, value in model.state_dict().items():
        expected = fresh.state_dict()[key] if key in BOX_PREDICTOR else coco[key]
        assert torch.equal(value, expected), key
    assert model.roi_heads.box_predictor.cls_score.out_features == 6
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 24
    # torchvision's builder sets eps 0 after loading these weights; so do we.
    assert {m.eps for m in model.modules() if isinstance(m, FrozenBatchNorm2d)} == {0.0}
    reinit = [line for line in log_lines if "re-initialised" in line]
    assert len(reinit) == 1 and reinit[0].endswith(": " + ", ".join(BOX_PREDICTOR)), reinit


@pytest.mark.slow
def test_coco_weights_by_name_with_coco_classes_is_torchvisions_model(seed_cache):
    seed_cache("FasterRCNN_ResNet50_FPN_Weights.COCO_V1")
    weights = FasterRCNN_ResNet50_FPN_Weights.COCO_V1
    ours = build_model(ModelConfig(weights=str(weights)))
    theirs = fasterrcnn_resnet50_fpn(weights=weights)
    # Everything comes from the file, so no seed is needed for the tensors to agree.
    _assert_same_model(ours, theirs)
    theirs_eps = [m.eps for m in theirs.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert [m.eps for m in ours.modules() if isinstance(m, FrozenBatchNorm2d)] == theirs_eps


@pytest.mark.parametrize(
    "arch,old,new,reinit",
    [
        (
            "maskrcnn_resnet50_fpn",
            {"num_classes": 5},
            {"num_classes": 3},
            BOX_PREDICTOR
            + [
                "roi_heads.mask_predictor.mask_fcn_logits.weight",
                "roi_heads.mask_predictor.mask_fcn_logits.bias",
            ],
        ),
        (
            "keypointrcnn_resnet50_fpn",
            {"num_classes": 2, "num_keypoints": 5},
            {"num_classes": 2, "num_keypoints": 3},
            [
                "roi_heads.keypoint_predictor.kps_score_lowres.weight",
                "roi_heads.keypoint_predictor.kps_score_lowres.bias",
            ],
        ),
    ],
)
def test_fine_tune_reinitialises_only_class_dependent_layers(
    tmp_path, log_lines, arch, old, new, reinit
):
    source = build_model(_small(arch, **old))
    path = tmp_path / "source.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(3)
    model = build_model(_small(arch, weights=str(path), **new))
    torch.manual_seed(3)
    fresh = build_model(_small(arch, weights=str(path), **new), load_weights=False)
    changed = [k for k, v in model.state_dict().items() if v.shape != source.state_dict()[k].shape]
    assert changed == reinit
    for key, value in model.state_dict().items():
        expected = fresh.state_dict()[key] if key in reinit else source.state_dict()[key]
        assert torch.equal(value, expected), key
    lines = [line for line in log_lines if "re-initialised" in line]
    assert len(lines) == 1 and lines[0].endswith(": " + ", ".join(reinit))
    # The same numbers of classes load silently; our checkpoint evaluations stay strict.
    log_lines.clear()
    build_model(_small(arch, weights=str(path), **old))
    assert not [line for line in log_lines if "re-initialised" in line]


def test_fine_tune_refuses_any_other_misfit(tmp_path):
    mask = build_model(_small("maskrcnn_resnet50_fpn"))
    path = tmp_path / "mask.pth"
    torch.save(mask.state_dict(), path)
    with pytest.raises(CheckpointError, match="unexpected key roi_heads.mask_head"):
        build_model(_small("fasterrcnn_resnet50_fpn", num_classes=3, weights=str(path)))


def _fetch_on_two_ranks(rank: int, init_file: str, home: str, source: str, results) -> None:
    os.environ.update(TORCH_HOME=home, LOCAL_RANK=str(rank), **NO_NETWORK)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        for attempt in ("empty", "seeded"):
            try:
                results[(attempt, rank)] = str(fetch_weights(ResNet18_Weights.IMAGENET1K_V1))
            except CheckpointError as exc:
                results[(attempt, rank)] = f"error: {exc}"
            if rank == 0 and attempt == "empty":
                os.link(source, cached_file(ResNet18_Weights.IMAGENET1K_V1))
            dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_both_fail_on_an_empty_cache_then_both_read_it(tmp_path, weight_store):
    home = tmp_path / "home"
    source = weight_store("ResNet18_Weights.IMAGENET1K_V1")
    results = mp.get_context("spawn").Manager().dict()
    mp.start_processes(
        _fetch_on_two_ranks,
        args=(str(tmp_path / "rdzv"), str(home), str(source), results),
        nprocs=2,
        start_method="spawn",
    )
    # Local rank 0 tried the download; both then found no file and said so instead of hanging.
    assert "resnet18-f37072fd.pth is not in" in results[("empty", 0)]
    assert "(URLError: " in results[("empty", 0)]
    assert "local rank 0 of this node could not download it" in results[("empty", 1)]
    target = str(home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    assert results[("seeded", 0)] == results[("seeded", 1)] == target


def _train(config: str, data_root: Path, out: Path, env: dict, *sets: str):
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), "--config", config]
    for value in (f"data.root={data_root}", *sets):
        cmd += ["--set", value]
    cmd += ["--output-dir", str(out)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_cli_with_imagenet_backbone_by_name(tmp_path, weight_store):
    data_root = make_tiny_dataset(tmp_path / "data")
    home = tmp_path / "home"
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_HOME=str(home), **NO_NETWORK)
    config = "configs/demo/faster_rcnn_r18_zenith.yaml"
    sets = ["model.backbone_weights=ResNet18_Weights.IMAGENET1K_V1", "train.epochs=1"]
    sets += ["train.max_iters_per_epoch=3"]

    empty = _train(config, data_root, tmp_path / "empty", env, *sets)
    assert empty.returncode == 2, empty.stderr[-2000:]
    assert "Traceback" not in empty.stderr
    (line,) = [x for x in empty.stderr.splitlines() if x.startswith("error:")]
    assert "resnet18-f37072fd.pth is not in" in line and str(home / "hub" / "checkpoints") in line

    target = home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    os.link(weight_store("ResNet18_Weights.IMAGENET1K_V1"), target)
    run = _train(config, data_root, tmp_path / "run", env, *sets)
    assert run.returncode == 0, run.stderr[-3000:]
    imagenet = torch.load(target, weights_only=True)
    trained = load_checkpoint(tmp_path / "run" / "last.pth")["model"]
    body = {k.removeprefix("backbone.body."): v for k, v in trained.items() if "body." in k}
    assert not any(k.endswith("num_batches_tracked") for k in body)  # FrozenBatchNorm2d
    for key, value in body.items():
        frozen = key.startswith(("conv1", "layer1", "bn1")) or ".bn" in key or "downsample.1" in key
        if frozen:  # frozen stages, and every BatchNorm's statistics and affine terms
            assert torch.equal(value, imagenet[key]), key
    assert not torch.equal(body["layer4.0.conv1.weight"], imagenet["layer4.0.conv1.weight"])


@pytest.mark.slow
def test_finetune_recipe_trains_mask_rcnn_from_coco_weights_by_name(tmp_path, weight_store):
    data_root = make_tiny_dataset(tmp_path / "data")
    home = tmp_path / "home"
    target = home / "hub" / "checkpoints" / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    target.parent.mkdir(parents=True)
    os.link(weight_store("MaskRCNN_ResNet50_FPN_Weights.COCO_V1"), target)
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_HOME=str(home), **NO_NETWORK)
    layout = ["data.train_images=train", "data.val_images=val", "data.workers=0"]
    layout += ["data.train_annotations=annotations/instances_train.json"]
    layout += ["data.val_annotations=annotations/instances_val.json"]
    small = ["model.num_classes=6", "model.min_size=96", "model.max_size=128", "train.device=cpu"]
    small += ["train.epochs=1", "train.max_iters_per_epoch=2", "train.images_per_gpu=1"]
    config = "configs/finetune/mask_rcnn_r50_fpn_coco_zenith.yaml"
    run = _train(config, data_root, tmp_path / "run", env, *layout, *small)
    assert run.returncode == 0, run.stderr[-3000:]
    reinit = BOX_PREDICTOR + [
        "roi_heads.mask_predictor.mask_fcn_logits.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.bias",
    ]
    (line,) = [x for x in run.stderr.splitlines() if "re-initialised" in x]
    assert line.endswith(": " + ", ".join(reinit)), line
    coco = torch.load(target, weights_only=True)
    trained = load_checkpoint(tmp_path / "run" / "last.pth")["model"]
    assert trained["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape[0] == 6
    for key in ("backbone.body.conv1.weight", "backbone.body.layer1.0.conv1.weight"):
        assert torch.equal(trained[key], coco[key]), key  # frozen stages stay the file's
