"""evaluate_model: eval mode, inference mode, batching and image ids into the evaluator."""

from __future__ import annotations

import torch
from torch import nn

from tests.evaluation.synthetic import coco_from_dataset, make_ground_truth, make_outputs
from zenith_det.evaluation.coco_evaluator import CocoEvaluator
from zenith_det.evaluation.inference import evaluate_model


class ReplayModel(nn.Module):
    """Returns stored outputs for the image id encoded in the image's first pixel."""

    def __init__(self, outputs: dict[int, dict]) -> None:
        super().__init__()
        self.outputs = outputs
        self.calls: list[tuple[bool, bool]] = []
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        self.calls.append((self.training, torch.is_inference_mode_enabled()))
        # Clones made here are inference tensors, as a real model's outputs would be.
        return [
            {k: v.clone() for k, v in self.outputs[int(image[0, 0, 0])].items()} for image in images
        ]


def test_evaluate_model_equals_feeding_the_evaluator() -> None:
    dataset = make_ground_truth(num_images=5, seed=11)
    outputs = make_outputs(dataset, seed=12)
    ids = list(outputs)
    loader = [
        (
            [torch.full((3, 4, 4), float(i)) for i in ids[s : s + 2]],
            [{"image_id": torch.tensor(i)} for i in ids[s : s + 2]],
        )
        for s in range(0, len(ids), 2)
    ]
    model = ReplayModel(outputs).train()
    evaluator = CocoEvaluator(coco_from_dataset(dataset), ["bbox", "segm"])
    result = evaluate_model(model, loader, evaluator, "cpu", progress=False)
    assert model.calls == [(False, True)] * len(loader)
    assert model.training  # restored

    direct = CocoEvaluator(coco_from_dataset(dataset), ["bbox", "segm"])
    direct.update([outputs[i] for i in ids], ids)
    expected = direct.summarize()
    assert result.metrics == expected.metrics
    assert result.num_images == len(ids)
