"""Torchvision weights by name: resolve them, check they fit the model, fetch them into the cache.

A name (`config.is_weights_name`) such as `ResNet50_Weights.IMAGENET1K_V1` or
`MaskRCNN_ResNet50_FPN_Weights.DEFAULT` is resolved with torchvision's own
`torchvision.models.get_weight`. Its file lives where torchvision's builders keep it, torch's hub
cache: `$TORCH_HOME/hub/checkpoints/<basename of the URL>` (`torch.hub.get_dir()`), so a file
torchvision downloaded before is reused and vice versa.

Under torchrun, local rank 0 of each node downloads a missing file (with torch's progress bar and
hash check) while the other ranks wait at a barrier; then every rank reads the cache. A file that
is missing and cannot be downloaded (an offline machine) is one `CheckpointError` line that names
the file, the folder to put it in and the URL to fetch it from elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch.hub
from torchvision.models import WeightsEnum, get_model_weights, get_weight

from zenith_det import distributed as dist_utils
from zenith_det.errors import CheckpointError, ConfigError, error_line


def resolve_weights(name: str, key: str, fits: str, model: str) -> WeightsEnum:
    """The torchvision weights `name`, or a ConfigError if unknown or not made for `fits`.

    `fits` is the torchvision builder the weights must belong to (`resnet18`,
    `maskrcnn_resnet50_fpn`...); `model` describes the configured model for the message.
    """
    try:
        weights = get_weight(name)
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            None, key, f"unknown torchvision weights {name!r} ({exc}); {_what_fits(fits)}"
        ) from exc
    expected = get_model_weights(fits)
    if type(weights) is not expected:
        raise ConfigError(None, key, f"{name} does not fit {model}; {_what_fits(fits)}")
    return weights


def _what_fits(fits: str) -> str:
    enum = get_model_weights(fits)
    names = [f"{enum.__name__}.{member}" for member in enum.__members__]
    return f"{fits} takes {', '.join(names)}"


def cache_dir() -> Path:
    """torch's hub checkpoint folder, where torchvision's builders keep downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_file(weights: WeightsEnum) -> Path:
    """The path `weights` has (or will have) in the hub cache."""
    return cache_dir() / os.path.basename(urlparse(weights.url).path)


def fetch_weights(weights: WeightsEnum) -> Path:
    """The cached file of `weights`, downloaded first by local rank 0 of each node if missing.

    Every rank of a distributed run must call this (it holds a barrier).
    """
    path = cached_file(weights)
    failure = None
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and not path.is_file():
        failure = _download(weights.url, path)
    dist_utils.barrier()  # the other ranks read the file only once their node's rank 0 wrote it
    if not path.is_file():
        cause = failure or "local rank 0 of this node could not download it"
        raise CheckpointError(
            f"{weights}: {path.name} is not in {path.parent} and could not be downloaded "
            f"from {weights.url} ({cause}); on an offline machine fetch that URL elsewhere "
            f"and put the file in {path.parent}"
        )
    return path


def _download(url: str, path: Path) -> str | None:
    """Download `url` to `path` with a progress bar; None on success, else why it failed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    found = torch.hub.HASH_REGEX.search(path.name)
    dist_utils.get_logger().info("downloading %s to %s", url, path)
    try:
        # Writes a temporary file in the same folder and renames it once the hash checks out,
        # so a node's other ranks (or another node on a shared file system) never read half.
        torch.hub.download_url_to_file(url, str(path), found.group(1) if found else None)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash a RuntimeError
        return f"{type(exc).__name__}: {error_line(exc)}"
    return None
