"""Make sure a run's dataset is on disk: the one place that knows every data source.

``data.demo`` generates the embedded demo (:mod:`zenith_det.data.synthetic`); ``data.source``
names a dataset that is fetched and converted (``deepforest_trees``) or generated
(``shapes_source``, ``shapes_target``: :mod:`zenith_det.data.synthetic_variants`) into
``data.root`` when its files are missing. A new source is one entry in :data:`SOURCES` (and its
name in ``config.DATA_SOURCES``, which the config layer checks without importing data code).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from zenith_det.config import DataConfig
from zenith_det.data import synthetic_variants
from zenith_det.data.deepforest_trees import ensure_deepforest_trees_dataset
from zenith_det.data.synthetic import ensure_demo_dataset


def _generated(name: str) -> Callable[[Path], bool]:
    return lambda root: synthetic_variants.ensure_variant_dataset(name, root)


# data.source -> "put it into this root if it is not there; True if it had to".
SOURCES: dict[str, Callable[[Path], bool]] = {
    "deepforest_trees": ensure_deepforest_trees_dataset,
    **{name: _generated(name) for name in synthetic_variants.VARIANTS},
}


def ensure_dataset(data_cfg: DataConfig) -> bool:
    """Generate or fetch the configured dataset into ``data.root`` if needed; True if it did.

    Call it on one rank (training: the main one, then a barrier) or on every rank at once for
    the generated sets, whose files are written atomically with identical bytes.
    """
    changed = ensure_demo_dataset(data_cfg)  # False unless data.demo is on
    if data_cfg.source is not None:
        changed = SOURCES[data_cfg.source](Path(data_cfg.root)) or changed
    return changed
