"""league.png: per group, AP against iteration (mean over seeds, min-max band) and the step size.

Needs the `plot` extra (matplotlib); without it the league says how to install it and goes on.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from league_variants import SOLID_VARIANTS, VARIANTS

PLOT_HINT = "pip install -e '.[plot]'"


def plot_league(summary: dict, out: Path) -> Path | None:
    """league.png: AP against iteration per dataset, mean and min-max band per variant."""
    if find_spec("matplotlib") is None:
        print(f"league.png not written: plotting needs matplotlib: {PLOT_HINT}", flush=True)
        return None
    if not summary:
        print("league.png not written: no finished cell to plot", flush=True)
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(summary), figsize=(7 * len(summary), 9), squeeze=False)
    for ax, part in zip(axes[1], summary.values(), strict=True):
        _plot_step_sizes(plt, ax, part["rows"])
    for ax, (dataset, part) in zip(axes[0], summary.items(), strict=True):
        for variant, row in part["rows"].items():
            if not row["seeds"]:
                continue
            color, style = _line_style(plt, variant)
            steps = row["curve_steps"]
            ax.plot(steps, row["curve_mean"], style, marker="o", color=color, label=variant)
            band = (row["curve_min"], row["curve_max"])
            ax.fill_between(steps, *band, color=color, alpha=0.15)
        if part["target"] is not None:
            ax.axhline(part["target"], color="grey", linestyle=":", label="95% of multistep")
        ax.set(title=dataset, xlabel="iteration", ylabel="primary AP (val)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _plot_step_sizes(plt, ax, rows: dict) -> None:
    # Log scale: the variants' step sizes span four decades (Prodigy's is an Adam step).
    logged = {v: row for v, row in rows.items() if row.get("lr_mean")}
    for variant, row in logged.items():
        color, style = _line_style(plt, variant)
        ax.plot(row["lr_steps"], row["lr_mean"], style, color=color, label=variant)
    ax.set(xlabel="iteration", ylabel="step size applied (mean over seeds)", yscale="log")
    if logged:
        ax.legend(fontsize=7)


def _line_style(plt, variant: str) -> tuple[tuple, str]:
    # A variant keeps its colour in every panel: main rows solid, ablations dashed.
    if variant in SOLID_VARIANTS:
        return plt.get_cmap("tab10").colors[SOLID_VARIANTS.index(variant)], "-"
    others = [v for v in VARIANTS if v not in SOLID_VARIANTS]
    palette = plt.get_cmap("Dark2").colors
    return palette[others.index(variant) % len(palette)], "--"
