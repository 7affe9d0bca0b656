"""Why ZENITH's step size is where it is: the gradient norm and its window, per regime and task.

    python benchmarks/league_mechanism.py --leagues benchmarks/results/league \\
        benchmarks/results/finetune_faster --out benchmarks/results/mechanism

For the finished ZENITH cells of one or more leagues (their results.json), per group (a dataset
from scratch, or `<dataset>+pretrained`) and model: the window mean mu of the gradient norm and
the ratio mu/Z it gives (eta_t = eta_0 mu / Z) at 10% and 90% of the run, mean over seeds, and
whether mu rose or fell between them. The raw gradient norm and each loss term at the same two
points, the quantities that say what drives the norm, come from the cell's `terms_curve` in
results.json or, for cells recorded before it was kept, from its run directory's metrics.jsonl
while that is still on disk.

Written: `<out>/mechanism.md` and `<out>/mechanism.png` (per group: the norm, raw and window
mean, the ratio and, for cells that logged them, the positives sampled per image against
iteration, one line per seed, four groups to a row; needs the `plot` extra).
mu and the ratio come from results.json (`norm_curve`), so a league whose run directories are
gone can still be read.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from importlib.util import find_spec
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules, as a script

from league_cells import cell_group, load_results  # noqa: E402
from league_plots import PLOT_HINT  # noqa: E402
from league_runs import at_root, is_term, run_records, terms_curve  # noqa: E402

from zenith_det.config import load_config  # noqa: E402
from zenith_det.config_loader import overrides_tree  # noqa: E402
from zenith_det.errors import SetupError, exit_on_user_error  # noqa: E402
from zenith_det.optim.momentum_snr import DEFAULT_SIGNAL  # noqa: E402

FRACTIONS = (0.1, 0.9)  # of a run's iterations


def model_name(cell: dict) -> str:
    """The model prefix of a cell's config (`faster_rcnn_r18_zenith.yaml` -> faster_rcnn_r18)."""
    return Path(cell["config"]).stem.rsplit("_", 1)[0]


def zenith_cells(leagues: list[str], variants: list[str]) -> dict[str, list[dict]]:
    """{`<group> (<model>, <epochs>) <variant>`: finished cells with a window}."""
    found: dict[str, list[dict]] = {}
    for league in leagues:
        path = at_root(league) / "results.json"
        if not path.is_file():
            raise SetupError(f"{path}: no results.json (give a league's --out folder)")
        for cell in load_results(path).values():
            if cell["variant"] in variants and cell["status"] == "ok" and cell.get("norm_curve"):
                # Cells of another length are another row, not another seed (epochs: a seed's
                # batches, grouped by aspect ratio, may give it a few more or fewer iterations).
                length = cell["curve"][-1][0] if cell.get("curve") else "?"
                label = f"{cell_group(cell)} ({model_name(cell)}, {length} ep.) {cell['variant']}"
                found.setdefault(label, []).append(cell)
    return found


def window_signal(cell: dict) -> str:
    """What a cell's window recorded: `optimizer.signal` of its config with its overrides."""
    overrides = cell.get("overrides", [])
    config = at_root(cell["config"])
    if config.is_file():
        return load_config(config, overrides).optimizer.signal
    # A league read in another checkout may lack the config: its overrides, else the default.
    return overrides_tree(overrides).get("optimizer", {}).get("signal", DEFAULT_SIGNAL)


def cell_series(cell: dict) -> dict[str, list]:
    """A cell's curves: steps, mu and ratio (results.json), raw norm and losses (terms_curve)."""
    series: dict = {
        "seed": cell["seed"],
        "steps": [p[0] for p in cell["norm_curve"]],
        "mu": [p[1] for p in cell["norm_curve"]],
        "ratio": [p[2] for p in cell["norm_curve"]],
    }
    terms = cell.get("terms_curve") or terms_curve(run_records(at_root(cell["run_dir"])))
    if terms.get("grad_norm"):
        series["norm_steps"] = [p[0] for p in terms["grad_norm"]]
        series["norm"] = [p[1] for p in terms["grad_norm"]]
    series["losses"] = {name: pairs for name, pairs in terms.items() if is_term(name)}
    return series


def value_at(steps: list[int], values: list[float], step: float) -> float | None:
    """The first value logged at or after `step` (None when the run logged none there)."""
    return next((v for s, v in zip(steps, values, strict=True) if s >= step), None)


def at_fractions(series: dict, last_step: int) -> dict[str, list[float | None]]:
    """mu, ratio, raw norm and each loss at FRACTIONS of a run that ended at `last_step`."""
    points = [f * last_step for f in FRACTIONS]
    out = {
        "mu": [value_at(series["steps"], series["mu"], p) for p in points],
        "ratio": [value_at(series["steps"], series["ratio"], p) for p in points],
    }
    if series.get("norm"):
        out["norm"] = [value_at(series["norm_steps"], series["norm"], p) for p in points]
    for name, pairs in series.get("losses", {}).items():
        steps, values = [p[0] for p in pairs], [p[1] for p in pairs]
        out[name] = [value_at(steps, values, p) for p in points]
    return out


def summarize_label(cells: list[dict]) -> dict:
    """Mean over seeds of every quantity at 10% and 90% of the run; per-seed series for plots."""
    per_seed, series = [], []
    for cell in cells:
        one = cell_series(cell)
        last = max(cell["curve"][-1][1] if cell.get("curve") else 0, one["steps"][-1])
        per_seed.append(at_fractions(one, last))
        series.append(one)
    names = [n for n in per_seed[0] if all(n in s for s in per_seed)]
    means = {}
    for name in names:
        pairs = [s[name] for s in per_seed]
        means[name] = [_mean([p[i] for p in pairs]) for i in range(len(FRACTIONS))]
    signal = window_signal(cells[0])  # one variant per label, so one signal
    return {"seeds": len(cells), "at": means, "series": series, "signal": signal}


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def _text(pair: list[float | None], digits: int = 3) -> str:
    return " → ".join("–" if v is None else f"{v:.{digits}f}" for v in pair)


def trend(pair: list[float | None]) -> str:
    """ "rises", "falls" or "–" from the value at 10% to the value at 90%."""
    first, last = pair
    if first is None or last is None:
        return "–"
    return "rises" if last > first else "falls"


def render_markdown(summary: dict[str, dict], command: str = "") -> str:
    """mechanism.md: the window at 10% and 90% of each run, then the loss terms."""
    lines = ["# ZENITH's mechanism: the gradient-norm window", ""]
    lines.append(
        "Mean over seeds at 10% → 90% of each run's iterations. mu: the window mean of the "
        "global gradient norm; ratio: mu / Z, so eta_t = eta_0 x ratio; norm: the raw norm "
        "at that log period (– for cells recorded before results.json kept it, once their run "
        "directory is gone). For the cells whose window records `optimizer.signal` momentum_snr "
        "(the `*_snr*` variants) mu is the window mean of that signal, not of the norm."
    )
    lines += [
        "",
        "| group (model, epochs) variant | seeds | mu | mu trend | ratio | raw norm |",
    ]
    lines.append("|---|---|---|---|---|---|")
    for label, part in summary.items():
        at = part["at"]
        norm = _text(at["norm"], 2) if "norm" in at else "–"
        lines.append(
            f"| {label} | {part['seeds']} | {_text(at['mu'], 2)} | {trend(at['mu'])} "
            f"| {_text(at['ratio'])} | {norm} |"
        )
    loss_rows = [(label, part) for label, part in summary.items() if _losses(part)]
    if loss_rows:
        lines += [
            "",
            "Loss terms at 10% → 90% of the run (mean over seeds), and for cells recorded since "
            "they were logged, the positives the RPN (anchors) and the ROI heads (proposals) "
            "sampled per image:",
            "",
        ]
        for label, part in loss_rows:
            terms = ", ".join(
                f"{n} {_text(v, 1 if n.endswith('_positives') else 3)}"
                for n, v in _losses(part).items()
            )
            lines.append(f"- {label}: {terms}")
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def _losses(part: dict) -> dict[str, list]:
    return {n: v for n, v in part["at"].items() if is_term(n)}


PLOT_COLUMNS = 4  # groups per row of panels; more wrap onto further rows


def plot_mechanism(summary: dict[str, dict], out: Path) -> Path | None:
    """mechanism.png: per group, the norm (raw, window mean), the ratio and, where logged, the
    sampled positives per image, against iteration; groups wrap after PLOT_COLUMNS."""
    if find_spec("matplotlib") is None:
        print(f"mechanism.png not written: plotting needs matplotlib: {PLOT_HINT}", flush=True)
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    panels = 3 if any(_has_positives(part) for part in summary.values()) else 2
    columns = min(max(len(summary), 1), PLOT_COLUMNS)
    blocks = math.ceil(max(len(summary), 1) / columns)
    fig, axes = plt.subplots(
        panels * blocks, columns, figsize=(5.5 * columns, 3.2 * panels * blocks), squeeze=False
    )
    for index, (label, part) in enumerate(summary.items()):
        block, column = divmod(index, columns)
        group_axes = [axes[block * panels + row][column] for row in range(panels)]
        _plot_group(plt, group_axes, label, part)
    for index in range(len(summary), blocks * columns):  # the last row's empty places
        block, column = divmod(index, columns)
        for row in range(panels):
            axes[block * panels + row][column].set_visible(False)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _plot_group(plt, axes: list, label: str, part: dict) -> None:
    top, middle = axes[0], axes[1]
    snr = part["signal"] == "momentum_snr"  # its window holds that signal, not the norm
    for index, one in enumerate(part["series"]):
        color = plt.get_cmap("tab10").colors[index % 10]
        if one.get("norm") and not snr:
            top.plot(one["norm_steps"], one["norm"], color=color, alpha=0.3, linewidth=0.8)
        top.plot(one["steps"], one["mu"], color=color, label=f"seed {one['seed']}")
        middle.plot(one["steps"], one["ratio"], color=color)
        if len(axes) > 2:
            for name, style in (("roi_positives", "-"), ("rpn_positives", "--")):
                pairs = one["losses"].get(name)
                if pairs:
                    axes[2].plot(*zip(*pairs, strict=True), color=color, linestyle=style)
    top.set_title(label, fontsize=9)
    top.set(
        ylabel="momentum SNR, window mean" if snr else "grad norm (faint: raw;\nline: window mean)"
    )
    middle.set(ylabel="ratio mu / Z", ylim=(0, 1.05))
    top.legend(fontsize=7)
    axes[-1].set(xlabel="iteration")
    if len(axes) > 2:
        axes[2].set(ylabel="positives per image\n(solid: ROI; dashed: RPN)")
        if not _has_positives(part):
            axes[2].text(0.5, 0.5, "not logged", ha="center", transform=axes[2].transAxes)


def _has_positives(part: dict) -> bool:
    return any(one["losses"].get("roi_positives") for one in part["series"])


def get_args_parser() -> argparse.ArgumentParser:
    """The mechanism report's arguments."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--leagues", nargs="+", required=True, help="league --out folders")
    parser.add_argument("--variants", nargs="+", default=["zenith"], help="ZENITH variants")
    parser.add_argument("--out", default=None, help="where to write (default: the first league)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: read the leagues, write mechanism.md and mechanism.png, print the table."""
    args = get_args_parser().parse_args(argv)
    with exit_on_user_error():
        found = zenith_cells(args.leagues, args.variants)
        if not found:
            raise SetupError(f"no finished cell of {args.variants} with a window in {args.leagues}")
        summary = {label: summarize_label(cells) for label, cells in found.items()}
        out = at_root(args.out or args.leagues[0])
        out.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/league_mechanism.py " + " ".join(
            ["--leagues", *args.leagues, "--variants", *args.variants]
            + (["--out", args.out] if args.out else [])
        )
        markdown = render_markdown(summary, command)
        (out / "mechanism.md").write_text(markdown, encoding="utf-8")
        plot_mechanism(summary, out / "mechanism.png")
        print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
