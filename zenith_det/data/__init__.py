"""COCO-format data: datasets, paired transforms, distributed sampling, loaders, the demo set."""

from typing import Any

from zenith_det.data.annotations import AnnotationStats, DataError
from zenith_det.data.coco import (
    CocoDataset,
    check_annotations_match_model,
    load_coco,
    load_rgb_image,
)
from zenith_det.data.loader import (
    TrainLoader,
    build_dataset,
    build_train_loader,
    build_val_loader,
    collate_detection,
)
from zenith_det.data.sampler import (
    GroupedDistributedBatchSampler,
    aspect_ratio_group_ids,
    shard_indices,
)
from zenith_det.data.transforms import (
    COCO_KEYPOINT_FLIP_MAP,
    Compose,
    RandomHorizontalFlip,
    ToTensor,
    build_transforms,
    sample_generator,
)

__all__ = [
    "COCO_KEYPOINT_FLIP_MAP",
    "AnnotationStats",
    "CocoDataset",
    "Compose",
    "DataError",
    "GroupedDistributedBatchSampler",
    "RandomHorizontalFlip",
    "ToTensor",
    "TrainLoader",
    "aspect_ratio_group_ids",
    "build_dataset",
    "build_train_loader",
    "build_transforms",
    "build_val_loader",
    "check_annotations_match_model",
    "collate_detection",
    "load_coco",
    "load_rgb_image",
    "sample_generator",
    "shard_indices",
]

# The demo names are imported on first use rather than here: importing `synthetic` with the
# package would make `python -m zenith_det.data.synthetic` warn that runpy found the module
# already imported. They stay out of __all__, which lists what is bound at import time.
_DEMO_NAMES = {
    "DEMO_FLIP_MAP",
    "DEMO_LAYOUT",
    "DEMO_OKS_SIGMAS",
    "demo_data_fields",
    "demo_model_fields",
    "ensure_demo_dataset",
    "generate_demo_dataset",
}


def __getattr__(name: str) -> Any:
    """Resolve the demo-dataset names from :mod:`zenith_det.data.synthetic` on first access."""
    if name in _DEMO_NAMES:
        from zenith_det.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
