"""COCO evaluation: model outputs or a results file -> pycocotools metrics and report files.

Names are loaded on first use (PEP 562) so that file-mode scoring (`evaluate_detections`,
`tools/eval.py --detections`) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CocoEvaluator": "coco_evaluator",
    "EvalResult": "scoring",
    "STAT_NAMES": "scoring",
    "IOU_TYPES": "scoring",
    "COCO_KPT_OKS_SIGMAS": "scoring",
    "evaluate_detections": "result_files",
    "evaluate_result_file": "result_files",
    "load_ground_truth": "result_files",
    "ResultFileError": "result_files",
    "evaluate_model": "inference",
    "evaluate_checkpoint": "run",
    "write_report": "report",
    "format_table": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
