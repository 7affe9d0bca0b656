"""Build Faster, Mask and Keypoint R-CNN from the config, offline: weights only from local files.

With `model.backbone` unset (or "resnet50" at 256 FPN channels) the model is exactly
torchvision's builder (`fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, ...)`).
A smaller backbone (resnet18/34, mobilenet_v3_large) swaps the FPN body for CPU runs; the heads
then scale with `fpn_channels` by torchvision's own ratios (box MLP = 4x, keypoint convs = 2x the
FPN width), so at 256 channels the heads are torchvision's defaults.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, resnet18, resnet34, resnet50
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
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _mobilenet_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from zenith_det.checkpoint import load_checkpoint, load_model_weights
from zenith_det.config import ModelConfig, model_task

_TORCHVISION_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fasterrcnn_resnet50_fpn": fasterrcnn_resnet50_fpn,
    "fasterrcnn_resnet50_fpn_v2": fasterrcnn_resnet50_fpn_v2,
    "maskrcnn_resnet50_fpn": maskrcnn_resnet50_fpn,
    "maskrcnn_resnet50_fpn_v2": maskrcnn_resnet50_fpn_v2,
    "keypointrcnn_resnet50_fpn": keypointrcnn_resnet50_fpn,
}
_RESNETS = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}
_RESNET_STAGES = ["layer4", "layer3", "layer2", "layer1", "conv1"]


def build_model(cfg: ModelConfig) -> nn.Module:
    """The R-CNN named by `cfg.arch`, with local weights loaded when the config names them."""
    if _uses_torchvision_builder(cfg):
        model = _build_torchvision(cfg)
    else:
        model = _build_custom(cfg)
    if cfg.weights:
        load_model_weights(model, cfg.weights)
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


def _uses_torchvision_builder(cfg: ModelConfig) -> bool:
    # torchvision's builders freeze BN and stages only for weights they download themselves, so
    # local backbone weights go through our own FPN assembly (same layers at ResNet-50/256).
    default_body = cfg.backbone in (None, "resnet50") and cfg.fpn_channels == 256
    return default_body and cfg.backbone_weights is None


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


def _trainable_layers(cfg: ModelConfig, pretrained: bool) -> int:
    if cfg.trainable_backbone_layers is not None:
        return cfg.trainable_backbone_layers
    # torchvision's rule: train everything from scratch, the top 3 stages when pretrained.
    return 3 if pretrained else 5


def _build_custom(cfg: ModelConfig) -> nn.Module:
    if cfg.arch.endswith("_v2"):
        raise ValueError(
            f"{cfg.arch}: model.backbone, model.fpn_channels and model.backbone_weights need a "
            "v1 arch; the _v2 heads exist only in torchvision's own from-scratch builder"
        )
    backbone = _fpn_backbone(cfg, pretrained=cfg.backbone_weights is not None)
    width = backbone.out_channels
    kwargs = _common_kwargs(cfg)
    # torchvision refuses num_classes together with a predictor: the predictor carries it.
    kwargs["num_classes"] = None
    kwargs["box_head"] = TwoMLPHead(width * 7 * 7, 4 * width)
    kwargs["box_predictor"] = FastRCNNPredictor(4 * width, cfg.num_classes)
    if backbone.num_feature_maps == 3:  # mobilenet: two FPN levels + pool
        sizes = ((32, 64, 128, 256, 512),) * 3
        kwargs["rpn_anchor_generator"] = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 3)
    task = model_task(cfg.arch)
    if task == "instance_segmentation":
        kwargs["mask_head"] = MaskRCNNHeads(width, (width,) * 4, 1)
        kwargs["mask_predictor"] = MaskRCNNPredictor(width, width, cfg.num_classes)
        return MaskRCNN(backbone, **kwargs)
    if task == "keypoints":
        kwargs["keypoint_head"] = KeypointRCNNHeads(width, (2 * width,) * 8)
        kwargs["keypoint_predictor"] = KeypointRCNNPredictor(2 * width, cfg.num_keypoints)
        kwargs["num_keypoints"] = None
        return KeypointRCNN(backbone, **kwargs)
    return FasterRCNN(backbone, **kwargs)


def _fpn_backbone(cfg: ModelConfig, pretrained: bool) -> nn.Module:
    norm_layer = FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    trainable = _trainable_layers(cfg, pretrained)
    if cfg.backbone == "mobilenet_v3_large":
        body = mobilenet_v3_large(weights=None, norm_layer=norm_layer)
        if pretrained:
            _load_backbone_weights(body, cfg.backbone_weights)
        if cfg.fpn_channels != 256:
            raise ValueError(
                "model.fpn_channels must be 256 with model.backbone=mobilenet_v3_large"
            )
        backbone = _mobilenet_extractor(body, True, min(trainable, 6), norm_layer=None)
        backbone.num_feature_maps = 3
        return backbone
    body = _RESNETS[cfg.backbone or "resnet50"](weights=None, norm_layer=norm_layer)
    if pretrained:
        _load_backbone_weights(body, cfg.backbone_weights)
    _freeze_resnet_stages(body, trainable)
    channels = [body.inplanes // 8 * 2**i for i in range(4)]
    return_layers = {f"layer{i + 1}": str(i) for i in range(4)}
    backbone = BackboneWithFPN(body, return_layers, channels, cfg.fpn_channels)
    backbone.num_feature_maps = 5
    return backbone


def _freeze_resnet_stages(body: nn.Module, trainable: int) -> None:
    if not 0 <= trainable <= 5:
        raise ValueError(f"model.trainable_backbone_layers must be in [0, 5], got {trainable}")
    train = _RESNET_STAGES[:trainable] + (["bn1"] if trainable == 5 else [])
    for name, param in body.named_parameters():
        if not any(name.startswith(stage) for stage in train):
            param.requires_grad_(False)


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path)
    # Accept a raw state dict or one of our checkpoints (which keep it under "model").
    return state["model"] if isinstance(state.get("model"), dict) else state


def _load_backbone_weights(body: nn.Module, path: str) -> None:
    state = _read_state_dict(path)
    # ImageNet classifiers carry an `fc`/`classifier` head the detection body does not have.
    missing, _ = body.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"{path}: backbone weights lack {len(missing)} keys, e.g. {missing[:3]}")


def describe_state_dict_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between a model's keys/shapes and a state dict's."""
    own = model.state_dict()
    problems = [f"missing key {k}" for k in own if k not in state]
    problems += [f"unexpected key {k}" for k in state if k not in own]
    problems += [
        f"{k}: checkpoint shape {tuple(state[k].shape)} != model shape {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    return problems


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
