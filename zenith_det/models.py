"""Build Faster, Mask and Keypoint R-CNN from the config, as torchvision's builders build them.

Without weights and with `model.backbone` unset (or "resnet50" at 256 FPN channels) the model is
exactly torchvision's builder (`fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)`):
plain BatchNorm, all stages trained. With weights (`model.weights` or `model.backbone_weights`, a
local file or a torchvision weights name) it is what torchvision builds with `weights=` /
`weights_backbone=`: FrozenBatchNorm2d in the backbone and `trainable_backbone_layers` 3 by default,
module for module and, from the same seed and file, tensor for tensor.

A smaller backbone (resnet18/34, mobilenet_v3_large) swaps the FPN body for CPU runs, with the same
rules. At 256 FPN channels the heads are torchvision's defaults, built in torchvision's order; at
other widths they scale by torchvision's ratios (box MLP 4x, keypoint convs 2x the FPN width).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision.models import WeightsEnum, mobilenet_v3_large, resnet18, resnet34, resnet50
from torchvision.models.detection import (
    FasterRCNN,
    KeypointRCNN,
    MaskRCNN,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet50_fpn_v2,
    keypointrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _mobilenet_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from zenith_det.checkpoint import load_checkpoint, load_model_weights, state_dict_problems
from zenith_det.config import ModelConfig, is_weights_name, model_task
from zenith_det.errors import CheckpointError, ConfigError
from zenith_det.weights import fetch_weights, resolve_weights

_TORCHVISION_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fasterrcnn_resnet50_fpn": fasterrcnn_resnet50_fpn,
    "fasterrcnn_resnet50_fpn_v2": fasterrcnn_resnet50_fpn_v2,
    "maskrcnn_resnet50_fpn": maskrcnn_resnet50_fpn,
    "maskrcnn_resnet50_fpn_v2": maskrcnn_resnet50_fpn_v2,
    "keypointrcnn_resnet50_fpn": keypointrcnn_resnet50_fpn,
}
_MODEL_CLASSES = {
    "detection": FasterRCNN,
    "instance_segmentation": MaskRCNN,
    "keypoints": KeypointRCNN,
}
_RESNETS = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}
_RESNET_STAGES = ["layer4", "layer3", "layer2", "layer1", "conv1"]
# torchvision's builders set FrozenBatchNorm2d's eps to 0 after loading these (they were trained
# with it); doing the same keeps their published AP.
_EPS_ZERO = {
    "FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
    "MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
    "KeypointRCNN_ResNet50_FPN_Weights.COCO_V1",
}


def build_model(cfg: ModelConfig, load_weights: bool = True) -> nn.Module:
    """The R-CNN named by `cfg.arch`, with its configured weights loaded (fetched if named).

    A name that does not fit the model is a ConfigError before anything is built. With
    `load_weights=False` the same architecture (frozen BatchNorm and stages included) is built
    without reading any weights, e.g. to load one of our checkpoints into it.
    """
    named = _resolve_named_weights(cfg)
    pretrained = cfg.weights is not None or cfg.backbone_weights is not None
    if cfg.arch.endswith("_v2"):
        model = _build_v2(cfg, pretrained)
    elif _is_default_body(cfg) and not pretrained:
        model = _build_torchvision(cfg)
    else:
        model = _build_custom(cfg, pretrained)
    if load_weights:
        _load_configured_weights(model, cfg, named)
    if str(named.get("model.weights")) in _EPS_ZERO:
        overwrite_eps(model, 0.0)
    fix_roi_pool_scales(model)
    return model


def fix_roi_pool_scales(model: nn.Module, size: int = 256) -> None:
    """Set every MultiScaleRoIAlign's level scales once, from an input all FPN strides divide.

    torchvision infers them lazily from the first batch it sees and caches them. With small
    images the inference rounds differently from batch to batch, so the result depended on which
    batch came first: a resumed run (whose first batch is a later one) trained a different
    model. Fixing them here makes them a property of the architecture; at COCO image sizes they
    equal what torchvision infers.
    """
    poolers = [m for m in model.modules() if isinstance(m, MultiScaleRoIAlign)]
    if not poolers:
        return
    was_training = model.training
    model.eval()  # no BatchNorm statistics are touched by this probe
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, size, size))
        for pooler in poolers:
            pooler.scales = None
            pooler.map_levels = None
            pooler(features, [torch.zeros(0, 4)], [(size, size)])
    model.train(was_training)


def _is_default_body(cfg: ModelConfig) -> bool:
    return cfg.backbone in (None, "resnet50") and cfg.fpn_channels == 256


def _resolve_named_weights(cfg: ModelConfig) -> dict[str, WeightsEnum]:
    """The torchvision weights named by the config, by key, each checked against the model."""
    named = {}
    if cfg.weights and is_weights_name(cfg.weights):
        named["model.weights"] = resolve_weights(
            cfg.weights, "model.weights", cfg.arch, f"model.arch {cfg.arch}"
        )
        if not _is_default_body(cfg):
            raise ConfigError(
                None,
                "model.weights",
                f"{cfg.weights} is torchvision's whole {cfg.arch} (ResNet-50 FPN, 256 channels) "
                f"and does not fit model.backbone {cfg.backbone} at model.fpn_channels "
                f"{cfg.fpn_channels}; set model.backbone: null and model.fpn_channels: 256",
            )
    if cfg.backbone_weights and is_weights_name(cfg.backbone_weights):
        name = cfg.backbone or "resnet50"
        named["model.backbone_weights"] = resolve_weights(
            cfg.backbone_weights, "model.backbone_weights", name, f"model.backbone {name}"
        )
    return named


def _load_configured_weights(
    model: nn.Module, cfg: ModelConfig, named: dict[str, WeightsEnum]
) -> None:
    # Full-model weights cover the backbone too, so backbone weights are then not read at all.
    if cfg.weights:
        path = _weights_file(cfg.weights, named.get("model.weights"))
        load_model_weights(model, path, finetune=True)
    elif cfg.backbone_weights:
        path = _weights_file(cfg.backbone_weights, named.get("model.backbone_weights"))
        _load_backbone_weights(model.backbone.body, cfg.backbone or "resnet50", path)


def _weights_file(value: str, weights: WeightsEnum | None) -> Path:
    return fetch_weights(weights) if weights is not None else Path(value)


def _common_kwargs(cfg: ModelConfig) -> dict:
    kwargs = {
        "num_classes": cfg.num_classes,
        "min_size": cfg.min_size,
        "max_size": cfg.max_size,
        "box_detections_per_img": cfg.box_detections_per_img,
    }
    if model_task(cfg.arch) == "keypoints":
        kwargs["num_keypoints"] = cfg.num_keypoints
    return kwargs


def _build_torchvision(cfg: ModelConfig) -> nn.Module:
    # From scratch torchvision trains all 5 stages with plain BatchNorm whatever it is told.
    return _TORCHVISION_BUILDERS[cfg.arch](
        weights=None, weights_backbone=None, **_common_kwargs(cfg)
    )


def _build_v2(cfg: ModelConfig, pretrained: bool) -> nn.Module:
    """torchvision's v2 builder; pretrained, it freezes the early stages but keeps BatchNorm."""
    if not _is_default_body(cfg):
        raise ConfigError(
            None,
            "model.backbone",
            f"{cfg.arch} exists only with its own ResNet-50 FPN at 256 channels; "
            "model.backbone and model.fpn_channels need a v1 arch",
        )
    model = _build_torchvision(cfg)
    # Freezing and loading draw no random numbers, so doing them after the build gives the
    # tensors torchvision's builder gives with weights_backbone=.
    _freeze_resnet_stages(model.backbone.body, _trainable_layers(cfg, pretrained, 5))
    return model


def _trainable_layers(cfg: ModelConfig, pretrained: bool, all_layers: int) -> int:
    trainable = cfg.trainable_backbone_layers
    if trainable is None:
        # torchvision's rule: train everything from scratch, the top 3 stages when pretrained.
        trainable = 3 if pretrained else all_layers
    if not 0 <= trainable <= all_layers:
        raise ConfigError(
            None,
            "model.trainable_backbone_layers",
            f"must be in [0, {all_layers}] for this backbone, got {trainable}",
        )
    return trainable


def _build_custom(cfg: ModelConfig, pretrained: bool) -> nn.Module:
    backbone = _fpn_backbone(cfg, pretrained)
    kwargs = _common_kwargs(cfg)
    if backbone.num_feature_maps == 3:  # mobilenet: two FPN levels + pool
        sizes = ((32, 64, 128, 256, 512),) * 3
        kwargs["rpn_anchor_generator"] = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 3)
    if backbone.out_channels != 256:
        # At 256 the model class builds torchvision's default heads itself, in torchvision's
        # order, so a seed gives torchvision's tensors.
        kwargs.update(_scaled_heads(cfg, backbone.out_channels))
    return _MODEL_CLASSES[model_task(cfg.arch)](backbone, **kwargs)


def _scaled_heads(cfg: ModelConfig, width: int) -> dict:
    # torchvision refuses num_classes together with a predictor: the predictor carries it.
    heads = {
        "num_classes": None,
        "box_head": TwoMLPHead(width * 7 * 7, 4 * width),
        "box_predictor": FastRCNNPredictor(4 * width, cfg.num_classes),
    }
    task = model_task(cfg.arch)
    if task == "instance_segmentation":
        heads["mask_head"] = MaskRCNNHeads(width, (width,) * 4, 1)
        heads["mask_predictor"] = MaskRCNNPredictor(width, width, cfg.num_classes)
    if task == "keypoints":
        heads["keypoint_head"] = KeypointRCNNHeads(width, (2 * width,) * 8)
        heads["keypoint_predictor"] = KeypointRCNNPredictor(2 * width, cfg.num_keypoints)
        heads["num_keypoints"] = None
    return heads


def _fpn_backbone(cfg: ModelConfig, pretrained: bool) -> nn.Module:
    norm_layer = FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    if cfg.backbone == "mobilenet_v3_large":
        if cfg.fpn_channels != 256:
            raise ConfigError(
                None, "model.fpn_channels", "must be 256 with model.backbone=mobilenet_v3_large"
            )
        body = mobilenet_v3_large(weights=None, norm_layer=norm_layer)
        trainable = _trainable_layers(cfg, pretrained, 6)
        backbone = _mobilenet_extractor(body, True, trainable, norm_layer=None)
        backbone.num_feature_maps = 3
        return backbone
    body = _RESNETS[cfg.backbone or "resnet50"](weights=None, norm_layer=norm_layer)
    _freeze_resnet_stages(body, _trainable_layers(cfg, pretrained, 5))
    channels = [body.inplanes // 8 * 2**i for i in range(4)]
    return_layers = {f"layer{i + 1}": str(i) for i in range(4)}
    backbone = BackboneWithFPN(body, return_layers, channels, cfg.fpn_channels)
    backbone.num_feature_maps = 5
    return backbone


def _freeze_resnet_stages(body: nn.Module, trainable: int) -> None:
    train = _RESNET_STAGES[:trainable] + (["bn1"] if trainable == 5 else [])
    for name, param in body.named_parameters():
        if not any(name.startswith(stage) for stage in train):
            param.requires_grad_(False)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path)
    # Accept a raw state dict or one of our checkpoints (which keep it under "model").
    return state["model"] if isinstance(state.get("model"), dict) else state


def _load_backbone_weights(body: nn.Module, backbone: str, path: Path) -> None:
    """Load an ImageNet classifier's state dict into the detection body, or say what differs."""
    # The body is the classifier without its head (resnet: fc; mobilenet: classifier), and for
    # mobilenet only its `features`, renumbered from the top.
    prefix, head = ("features.", "classifier.") if backbone == "mobilenet_v3_large" else ("", "fc.")
    state = {
        k[len(prefix) :]: v
        for k, v in _read_state_dict(path).items()
        if k.startswith(prefix) and not k.startswith(head)
    }
    problems = state_dict_problems(body, state)
    if problems:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(
            f"{path}: backbone weights do not fit model.backbone {backbone}: {shown}{more}"
        )
    body.load_state_dict(state)
