"""TensorBoard for a run (`train.tensorboard: true`): metrics.jsonl as scalars, val pictures.

Rank 0 writes `<output_dir>/tensorboard/`. The scalars are exactly what metrics.jsonl gets: the
hook subscribes to the run's `MetricsWriter`, so every numeric field of a train record (losses,
lr, ZENITH's ratio, gradient norm and window mean, images/s, ...) becomes `train/<field>` and
every stat of an eval record `eval/<iou type>/<stat>` (plus `eval/primary_AP`), at the record's
global step; pycocotools' -1 (undefined) is left out. At each evaluation the first
`NUM_IMAGES` val images are drawn, ground truth beside the predictions scoring at least
`SCORE_THRESHOLD`, as `val/<n>_<file>` images at that step: the same images every time, so
TensorBoard's step slider shows them change.

Resume: the writer opens at the first iteration or evaluation of this process, when the global
step is still G, the resumed checkpoint's. It then writes TensorBoard's `purge_step` G + 1,
and TensorBoard's reader drops the older events after G that a stopped or crashed run left,
as metrics.jsonl drops its records after G; the resumed run's events carry on the same curves.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from zenith_det import storage
from zenith_det.categories import CategoryInfo, keep_known_labels, skeleton_pairs
from zenith_det.config import Config
from zenith_det.engine import Hook, TrainLoop
from zenith_det.errors import SetupError
from zenith_det.evaluation.visualize import keep_scoring, truth_beside_prediction
from zenith_det.metrics_log import MetricsWriter

TENSORBOARD_DIR = "tensorboard"
INSTALL_HINT = "pip install 'zenith_det[tensorboard]'"
NUM_IMAGES = 4
SCORE_THRESHOLD = 0.5
# Fields of a record that locate it rather than measure something.
_NOT_SCALARS = ("type", "epoch", "iter", "step", "primary")


def check_tensorboard() -> None:
    """SetupError (one line naming the install command) unless tensorboard can be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise SetupError(
            f"train.tensorboard is true but the tensorboard package is not installed "
            f"({exc}); install it with: {INSTALL_HINT} (or set train.tensorboard=false)"
        ) from None


def tensorboard_hooks(
    cfg: Config, is_main: bool, writer: MetricsWriter, val_dataset: Any
) -> list[Hook]:
    """The run's TensorBoard hook: none unless train.tensorboard, and only rank 0 gets one.

    Every rank checks that tensorboard is installed, so all fail alike before the run writes
    anything.
    """
    if not cfg.train.tensorboard:
        return []
    check_tensorboard()
    if not is_main:
        return []
    categories = CategoryInfo.from_coco(val_dataset.coco, val_dataset.task)
    hook = TensorBoardLog(Path(cfg.output_dir) / TENSORBOARD_DIR, val_dataset, categories, cfg)
    writer.subscribe(hook.add_record)
    return [hook]


def record_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """TensorBoard tags and values of one metrics.jsonl record (numbers only, -1 AP left out)."""
    kind = str(record.get("type", "record"))
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in _NOT_SCALARS:
            continue
        if isinstance(value, Mapping):
            out.update(_nested_scalars(f"{kind}/{key}" if key != "metrics" else kind, value))
        elif _is_number(value):
            out[f"{kind}/{key}"] = float(value)
    return out


def _nested_scalars(prefix: str, values: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_nested_scalars(f"{prefix}/{key}", value))
        elif _is_number(value) and value != -1:  # pycocotools' "undefined"
            out[f"{prefix}/{key}"] = float(value)
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TensorBoardLog(Hook):
    """Writes the run's records and val pictures to TensorBoard (rank 0 only)."""

    def __init__(self, log_dir: Path, val_dataset: Any, categories: CategoryInfo, cfg: Config):
        """Log to `log_dir`; draw the first NUM_IMAGES of `val_dataset` at each evaluation."""
        self.log_dir = log_dir
        self.val_dataset = val_dataset
        self.categories = categories
        self.amp = cfg.train.amp
        self.keypoints = cfg.model.arch.startswith("keypoint")
        self._writer: Any = None

    def before_step(self, loop: TrainLoop) -> None:
        """Open the writer at this process's first iteration (see the module's resume note)."""
        self._open(loop.progress.global_step)

    def before_eval(self, loop: TrainLoop) -> None:
        """Draw the val pictures with the weights about to be evaluated."""
        self._open(loop.progress.global_step)
        model = getattr(loop.model, "module", loop.model)  # rank 0 alone: no DDP forward
        for index in range(min(NUM_IMAGES, len(self.val_dataset))):
            tag, picture = self._picture(model, index, loop.device)
            with self._writing():
                self._writer.add_image(tag, picture, loop.progress.global_step, dataformats="CHW")
        with self._writing():
            self._writer.flush()

    def add_record(self, record: dict[str, Any]) -> None:
        """Write one metrics.jsonl record's scalars at its step (MetricsWriter calls this)."""
        if self._writer is None:  # every record comes after an iteration or evaluation began
            return
        # The event writer's thread keeps a failed write's OSError and raises it at the next
        # add or flush: here, where storage turns it into one line naming the folder.
        with self._writing():
            for tag, value in record_scalars(record).items():
                self._writer.add_scalar(tag, value, record["step"])
            self._writer.flush()  # as metrics.jsonl: a crash loses at most the last record

    def _open(self, global_step: int) -> None:
        if self._writer is not None:
            return
        from torch.utils.tensorboard import SummaryWriter

        purge = global_step + 1 if global_step > 0 else None
        with self._writing():
            self._writer = SummaryWriter(str(self.log_dir), purge_step=purge)
        # Close the event file when the run's hooks go (tests run several runs in a process).
        weakref.finalize(self, self._writer.close)

    def _writing(self) -> AbstractContextManager:
        return storage.writing(self.log_dir, "TensorBoard events")

    def _picture(
        self, model: torch.nn.Module, index: int, device: torch.device
    ) -> tuple[str, torch.Tensor]:
        image, target = self.val_dataset[index]
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode(), torch.autocast(device.type, enabled=self.amp):
                output = model([image.to(device)])[0]
        finally:
            model.train(was_training)
        # Below the threshold first: enlarging 100 full-size masks would cost hundreds of MB.
        pred = keep_scoring(keep_known_labels(output, self.categories.ids), SCORE_THRESHOLD)
        pred = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in pred.items()}
        truth = {k: v for k, v in target.items() if isinstance(v, torch.Tensor)}
        skeleton = skeleton_pairs(self.categories) if self.keypoints else None
        pair = truth_beside_prediction(
            image,
            truth,
            pred,
            self.categories.names_by_id,
            skeleton,
            f"predictions >= {SCORE_THRESHOLD:g}",
        )
        file_name = self.val_dataset.coco.imgs[target["image_id"]]["file_name"]
        return f"val/{index}_{Path(file_name).stem}", pair
