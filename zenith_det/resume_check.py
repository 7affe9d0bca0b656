"""Whether a training checkpoint can be continued by this run: `--resume` refuses what it cannot.

A resumed run continues the saved run exactly, so whatever its saved state depends on must be
the same: the model (the weights' shapes), the optimizer type (its state's layout), ZENITH's
window (the saved norms), and the number of ranks, images per rank and micro-batches per step
(the sampler's shards and position, every rank's RNG state, the linearly scaled LR stored in the
optimizer). A difference
is one error line naming each key with both values; other config changes only warn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zenith_det.config import ZENITH_OPTIMIZERS, Config
from zenith_det.errors import CheckpointError

# Keys whose saved value the resumed state is built on (shapes, optimizer state layout).
MODEL_KEYS = ("arch", "backbone", "num_classes", "num_keypoints", "fpn_channels")


def resume_mismatches(
    saved: Config,
    state: dict[str, Any],
    cfg: Config,
    world_size: int,
    group_sizes: list[int] | None = None,
) -> list[str]:
    """`key: checkpoint X, this run Y` for every difference that makes the resume impossible.

    `group_sizes` are the parameter counts of this run's optimizer groups, when it has one.
    """
    pairs = [
        (f"model.{key}", getattr(saved.model, key), getattr(cfg.model, key)) for key in MODEL_KEYS
    ]
    pairs.append(("optimizer.name", saved.optimizer.name, cfg.optimizer.name))
    same_optimizer = saved.optimizer.name == cfg.optimizer.name
    if same_optimizer and cfg.optimizer.name in ZENITH_OPTIMIZERS:
        # The saved window has this length and its history started at this step.
        for key in ("window", "warmup_history", "signal"):
            pairs.append(
                (f"optimizer.{key}", getattr(saved.optimizer, key), getattr(cfg.optimizer, key))
            )
    if group_sizes is not None:
        saved_sizes = [len(group["params"]) for group in state["optimizer"]["param_groups"]]
        key = "trained parameters per optimizer group (model.weights, backbone_weights and "
        key += "trainable_backbone_layers decide which layers train)"
        pairs.append((key, saved_sizes, group_sizes))
    pairs.append(("world size (ranks)", len(state["rng"]), world_size))
    for key in ("images_per_gpu", "grad_accum_steps"):
        pairs.append((f"train.{key}", getattr(saved.train, key), getattr(cfg.train, key)))
    return [f"{key}: checkpoint {old}, this run {new}" for key, old, new in pairs if old != new]


def check_resume_compatible(
    path: str | Path,
    saved: Config,
    state: dict[str, Any],
    cfg: Config,
    world_size: int,
    group_sizes: list[int] | None = None,
) -> None:
    """Raise CheckpointError naming every key whose checkpoint and run values differ."""
    mismatches = resume_mismatches(saved, state, cfg, world_size, group_sizes)
    if not mismatches:
        return
    raise CheckpointError(
        f"{path}: cannot resume, this run differs from the checkpoint's in what its state "
        f"depends on ({'; '.join(mismatches)}); resume with the checkpoint's values (its config is "
        "the run's config.yaml), or start a new run instead"
    )
