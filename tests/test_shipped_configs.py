"""Every config the repository ships loads and validates, and each league dataset is complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from zenith_det.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.model.arch and cfg.train.epochs > 0


def test_every_league_dataset_has_both_bases_per_model():
    league = ROOT / "configs" / "league"
    for folder in (p for p in league.iterdir() if p.is_dir()):
        names = {p.stem for p in folder.glob("*.yaml") if not p.name.startswith("_")}
        models = {n.rsplit("_", 1)[0] for n in names}
        if folder.name.startswith("source"):
            # Source folders hold only the pretraining recipe of each model.
            assert names == {f"{m}_multistep" for m in models}, folder
        else:
            assert names == {f"{m}_{b}" for m in models for b in ("zenith", "multistep")}, folder
