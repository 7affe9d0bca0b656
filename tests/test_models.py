"""Model building: offline, every arch, small backbones, local weights and clear mismatches."""

import pytest
import torch

from zenith_det.checkpoint import CheckpointError
from zenith_det.config import ModelConfig
from zenith_det.models import build_model


def _small(arch: str, **kw) -> ModelConfig:
    base = dict(
        arch=arch,
        backbone="resnet18",
        fpn_channels=32,
        num_classes=5,
        num_keypoints=5,
        min_size=64,
        max_size=96,
    )
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize(
    "arch,expected",
    [
        ("fasterrcnn_resnet50_fpn", {"loss_classifier"}),
        ("maskrcnn_resnet50_fpn", {"loss_mask"}),
        ("keypointrcnn_resnet50_fpn", {"loss_keypoint"}),
    ],
)
def test_small_models_train_and_predict(arch, expected):
    model = build_model(_small(arch))
    target = {
        "boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]),
        "labels": torch.tensor([3]),
        "masks": torch.zeros(1, 64, 80, dtype=torch.uint8),
        "keypoints": torch.tensor([[[10.0, 10.0, 2.0]] * 5]),
    }
    losses = model([torch.rand(3, 64, 80)], [target])
    assert expected <= set(losses) and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 80)])[0]
    assert {"boxes", "scores", "labels"} <= set(out)


def test_default_is_torchvisions_builder():
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    ours = build_model(ModelConfig(arch="fasterrcnn_resnet50_fpn", num_classes=7))
    theirs = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=7)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }


def test_local_weights_load_and_mismatch_is_explained(tmp_path):
    model = build_model(_small("fasterrcnn_resnet50_fpn"))
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    # Weights make it torchvision's pretrained arch: BatchNorm frozen, so no batch counters.
    again = build_model(_small("fasterrcnn_resnet50_fpn", weights=str(path)))
    assert not any(k.endswith("num_batches_tracked") for k in again.state_dict())
    for k, v in again.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    with pytest.raises(
        CheckpointError,
        match=r"backbone.fpn.inner_blocks.0.0.weight: checkpoint shape \(32, 64, 1, 1\) "
        r"!= model shape \(64, 64, 1, 1\)",
    ):
        build_model(_small("fasterrcnn_resnet50_fpn", fpn_channels=64, weights=str(path)))


def test_v2_with_small_backbone_is_refused():
    with pytest.raises(ValueError, match="need a v1 arch"):
        build_model(_small("fasterrcnn_resnet50_fpn_v2"))


def test_local_backbone_weights_freeze_bn_and_early_stages(tmp_path):
    from torchvision.models import resnet18
    from torchvision.ops import FrozenBatchNorm2d

    imagenet = resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(imagenet.state_dict(), path)
    model = build_model(_small("fasterrcnn_resnet50_fpn", backbone_weights=str(path)))
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, imagenet.conv1.weight)
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert not body.layer1[0].conv1.weight.requires_grad  # 3 trainable stages by default
    assert body.layer2[0].conv1.weight.requires_grad


def test_roi_pool_scales_do_not_depend_on_the_first_batch():
    """The cached pooler scales are fixed at build time, whatever size the first batch has."""
    from torchvision.ops import MultiScaleRoIAlign

    model = build_model(_small("maskrcnn_resnet50_fpn"))
    poolers = [m for m in model.modules() if isinstance(m, MultiScaleRoIAlign)]
    assert len(poolers) == 2
    assert all(p.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32] for p in poolers)
    model.train()
    target = {
        "boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]),
        "labels": torch.tensor([1]),
        "masks": torch.zeros(1, 70, 41, dtype=torch.uint8),
    }
    model([torch.rand(3, 70, 41)], [target])  # an odd size torchvision would infer from
    assert all(p.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32] for p in poolers)
