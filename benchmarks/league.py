"""The optimizer league: ZENITH against the optimizers a user would otherwise pick.

    python benchmarks/league.py --datasets demo --seeds 0 1 2 --epochs 8 --nproc 2 \\
        --variants zenith multistep cosine constant dadapt_sgd prodigy schedulefree_sgd

Every (dataset, variant, seed) cell is one real `torchrun tools/train.py` run, evaluated after
every epoch, in `<out>/<dataset>/<variant>_s<seed>`. A dataset is a folder
`configs/league/<dataset>/` holding `<model>_zenith.yaml` and `<model>_multistep.yaml` (the
dataset's tuned multistep baseline); a variant (the VARIANTS table below) is one of these two
plus `--set` overrides, the same for every dataset. Relative paths (`--out`, `--configs`) are
relative to the repository root, where the runs are started.

Resumable: `<out>/results.json` is rewritten atomically after every finished cell, and a cell
found there is not run again. A cell that was interrupted is run again from scratch (its old run
directory is moved aside by `tools/train.py --overwrite`, never deleted). A run that stops
itself on non-finite losses (exit code 3) is a result too: it is recorded as diverged.

Written: `<out>/results.json`, `<out>/league.md` (per dataset: mean ± sample standard
deviation over seeds of the final and best AP and of the wall time, the mean AP after each
evaluation, and the iterations to reach 95% of the multistep baseline's mean final AP) and
`<out>/league.png` (top: AP against iteration, mean over seeds with the min-max band; bottom:
the step size each variant applied, mean over seeds; needs the `plot` extra). The Markdown and
the command that reproduces it are printed at the end. `--report-only` trains nothing: it writes
the table and plot of the requested cells that results.json already holds (e.g. main rows with 3
seeds next to ablations with 1).

The step size is what the optimizer applied, read from the run's metrics.jsonl at every log
period: `effective_lr` where the optimizer logs one (D-Adaptation's and Prodigy's d times lr,
schedule-free's warmed-up lr), otherwise `lr` (SGD with its schedule, ZENITH's eta_t). Prodigy's
is an Adam step, so its scale is not comparable with the SGD-style ones. For ZENITH runs the
table also shows the gradient-norm window: its mean mu at each evaluation and the final Z, which
show why eta_t = eta_0 mu / Z is where it is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zenith_det.config import load_config  # noqa: E402
from zenith_det.errors import ConfigError, SetupError, exit_on_user_error  # noqa: E402
from zenith_det.metrics_log import read_metrics  # noqa: E402
from zenith_det.run_dir import run_files  # noqa: E402

DIVERGED_EXIT = 3  # tools/train.py: stopped after train.max_consecutive_nonfinite steps
# torchrun reports any failed worker as exit 1, so a diverged cell is also known by the line
# every rank prints when it stops (zenith_det/engine.py, _diverged_message).
DIVERGED_LINE = "consecutive non-finite steps up to iteration"
TARGET_FRACTION = 0.95  # of the multistep baseline's mean final AP
BASELINE = "multistep"
PLOT_HINT = "pip install -e '.[plot]'"
# Schedule-free SGD's authors (schedulefree's README): "For SGD, a learning rate 10x-50x larger
# than classical rates seems to be a good starting point". We take the low end: our models
# train from scratch with BatchNorm statistics gathered at y, where the high end risks divergence.
SCHEDULEFREE_LR_SCALE = 10.0


@dataclass(frozen=True)
class Variant:
    """One league entry: which of the dataset's two configs, and what to change in it."""

    base: str  # "zenith" or "multistep": <model>_<base>.yaml of the dataset
    overrides: tuple[str, ...] = ()
    lr_scale: float = 1.0  # times the base config's optimizer.lr
    about: str = ""


AUTOMATIC_LR = ("optimizer.lr=1.0", "optimizer.base_batch_size=null")  # their authors' advice

VARIANTS: dict[str, Variant] = {
    "zenith": Variant("zenith", about="ZENITH, the dataset's recipe"),
    "multistep": Variant("multistep", about="SGD, the dataset's tuned multistep schedule"),
    "cosine": Variant("multistep", ("schedule.name=cosine",), about="SGD, cosine decay"),
    "constant": Variant("multistep", ("schedule.name=none",), about="SGD, constant LR"),
    "dadapt_sgd": Variant(
        "multistep",
        ("optimizer.name=dadapt_sgd", *AUTOMATIC_LR, "schedule.name=none"),
        about="D-Adaptation SGD, lr 1.0, warm-up only",
    ),
    "dadapt_sgd_cosine": Variant(
        "multistep",
        ("optimizer.name=dadapt_sgd", *AUTOMATIC_LR, "schedule.name=cosine"),
        about="D-Adaptation SGD, lr 1.0, cosine decay",
    ),
    "prodigy": Variant(
        "multistep",
        ("optimizer.name=prodigy", *AUTOMATIC_LR, "schedule.name=none"),
        about="Prodigy, lr 1.0, warm-up only",
    ),
    "prodigy_cosine": Variant(
        "multistep",
        ("optimizer.name=prodigy", *AUTOMATIC_LR, "schedule.name=cosine"),
        about="Prodigy, lr 1.0, cosine decay",
    ),
    "schedulefree_sgd": Variant(
        "multistep",
        ("optimizer.name=schedulefree_sgd", "schedule.name=none"),
        lr_scale=SCHEDULEFREE_LR_SCALE,
        about="schedule-free SGD, 10x the SGD LR",
    ),
    "zenith_lr2": Variant("zenith", lr_scale=2.0, about="ZENITH, eta_0 x2"),
    "zenith_lr4": Variant("zenith", lr_scale=4.0, about="ZENITH, eta_0 x4"),
    "zenith_w20": Variant("zenith", ("optimizer.window=20",), about="ZENITH, W = 20"),
    "zenith_w100": Variant("zenith", ("optimizer.window=100",), about="ZENITH, W = 100"),
    "zenith_w_epoch": Variant("zenith", ("optimizer.window=epoch",), about="ZENITH, W = 1 epoch"),
    "zenith_warmup_exclude": Variant(
        "zenith", ("optimizer.warmup_history=exclude",), about="ZENITH, warm-up norms excluded"
    ),
}

MAIN_VARIANTS = [
    "zenith",
    "multistep",
    "cosine",
    "constant",
    "dadapt_sgd",
    "prodigy",
    "schedulefree_sgd",
]


@dataclass(frozen=True)
class Cell:
    """One training run of the league."""

    dataset: str
    variant: str
    seed: int

    @property
    def key(self) -> str:
        """The cell's name in results.json and its run directory's name."""
        return f"{self.dataset}/{self.variant}_s{self.seed}"


def get_args_parser() -> argparse.ArgumentParser:
    """The league's arguments."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["demo"])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=MAIN_VARIANTS,
        choices=sorted(VARIANTS),
        metavar="VARIANT",
        help="any of: " + ", ".join(VARIANTS),
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="train.epochs for every run (default: each config's own); multistep milestones "
        "are scaled in proportion",
    )
    parser.add_argument("--nproc", type=int, default=2, help="ranks per run (torchrun)")
    parser.add_argument("--out", default="runs/league")
    parser.add_argument("--model", default="faster_rcnn_r18", help="config name prefix")
    parser.add_argument("--configs", default="configs/league", help="folder of the dataset folders")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: table and plot of the requested cells results.json holds",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra override for every run (repeatable)",
    )
    return parser


def league_cells(datasets: list[str], variants: list[str], seeds: list[int]) -> list[Cell]:
    """Every cell, variants innermost: a league stopped early has compared all on seed 0."""
    return [Cell(d, v, s) for d in datasets for s in seeds for v in variants]


def at_root(path: str | Path) -> Path:
    """A path as the league uses it: relative paths are relative to the repository root."""
    return ROOT / path  # an absolute `path` stays itself


def config_path(args: argparse.Namespace, dataset: str, base: str) -> Path:
    """The dataset's config for a variant base; ConfigError when the file is missing."""
    path = Path(args.configs) / dataset / f"{args.model}_{base}.yaml"
    if not at_root(path).is_file():
        raise ConfigError(
            str(path), None, f"not found: dataset '{dataset}' needs {args.model}_{base}.yaml"
        )
    return path


def scaled_milestones(milestones: list[int], epochs: int, new_epochs: int) -> list[int]:
    """Multistep milestones moved to the same fractions of a run of `new_epochs` epochs."""
    scaled = [max(1, round(m * new_epochs / epochs)) for m in milestones]
    return sorted(set(scaled))  # short runs may merge two milestones


def cell_spec(args: argparse.Namespace, cell: Cell) -> dict:
    """The config, `--set` overrides, ranks and run directory that train one cell."""
    variant = VARIANTS[cell.variant]
    path = config_path(args, cell.dataset, variant.base)
    base = load_config(at_root(path), args.overrides)
    overrides = [*args.overrides, *variant.overrides]
    if variant.lr_scale != 1.0:
        overrides.append(f"optimizer.lr={round(base.optimizer.lr * variant.lr_scale, 12)}")
    epochs = args.epochs or base.train.epochs
    resolved = load_config(at_root(path), overrides)
    if epochs != resolved.train.epochs and resolved.schedule.name == "multistep":
        moved = scaled_milestones(resolved.schedule.milestones, resolved.train.epochs, epochs)
        overrides.append(f"schedule.milestones={moved}")
    overrides += [f"train.epochs={epochs}", f"train.seed={cell.seed}", "train.eval_period=1"]
    load_config(at_root(path), overrides)  # a bad variant fails now, not hours into the league
    run_dir = Path(args.out) / cell.dataset / f"{cell.variant}_s{cell.seed}"
    return {
        "config": str(path),
        "overrides": overrides,
        "nproc": args.nproc,
        "run_dir": str(run_dir),
    }


def load_results(path: Path) -> dict:
    """The finished cells of results.json ({} when there is none yet)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SetupError(f"{path}: not valid JSON ({exc}); move it aside to start over") from exc
    if not isinstance(data, dict) or not isinstance(data.get("cells"), dict):
        raise SetupError(f"{path}: expected an object with 'cells'; move it aside to start over")
    return data["cells"]


def save_results(path: Path, cells: dict) -> None:
    """Write results.json atomically: a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".json")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the results from other users
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"cells": cells}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def pending_cells(
    cells: list[Cell], specs: dict[str, dict], done: dict, source: str = "results.json"
) -> list[Cell]:
    """The cells not yet in results.json; SetupError when a finished one was run differently."""
    todo = []
    for cell in cells:
        found = done.get(cell.key)
        if found is None:
            todo.append(cell)
            continue
        was, want = _launch(found), _launch(specs[cell.key])
        if was != want:
            raise SetupError(
                f"{source}: cell {cell.key} was run with {was}, now asked with {want}: "
                "use another --out"
            )
    return todo


def _launch(spec: dict) -> dict:
    # What decides a cell's result; the run directory may move with --out.
    return {key: spec.get(key) for key in ("config", "overrides", "nproc")}


def train_command(spec: dict) -> list[str]:
    """The torchrun command of one cell; --overwrite only when an interrupted run is there."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={spec['nproc']}", "tools/train.py", "--config", spec["config"]]
    cmd += ["--output-dir", spec["run_dir"]]
    for override in spec["overrides"]:
        cmd += ["--set", override]
    if run_files(at_root(spec["run_dir"])):
        cmd.append("--overwrite")  # the old run is moved aside (never deleted) and redone
    return cmd


def run_records(run_dir: Path) -> list[dict]:
    """A run's metrics.jsonl records ([] when it wrote none): read once, every curve from them."""
    path = run_dir / "metrics.jsonl"
    return read_metrics(path) if path.is_file() else []


def ap_curve(records: list[dict]) -> list[list[float]]:
    """[epoch, iterations so far, primary AP] after every evaluation of a run."""
    evals = [r for r in records if r.get("type") == "eval"]
    return [[r["epoch"] + 1, r["step"], r["primary_AP"]] for r in evals]


def lr_curve(records: list[dict]) -> list[list[float]]:
    """[iterations so far, step size applied] at every logged training iteration of a run."""
    train = [r for r in records if r.get("type") == "train"]
    return [[r["step"], r.get("effective_lr", r["lr"])] for r in train]


def norm_curve(records: list[dict]) -> list[list[float]]:
    """ZENITH runs: [iterations so far, window mean mu, ratio mu/Z] at every log period."""
    # With warmup_history=exclude the window mean is NaN during the warm-up; until
    # the window is full, mu is the mean of the norms recorded so far and the ratio is 1.
    return [
        [r["step"], r["grad_norm_window_mean"], r["zenith_ratio"]]
        for r in records
        if r.get("type") == "train" and _finite(r.get("grad_norm_window_mean"))
    ]


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def with_curves(cells: dict) -> dict:
    """Cells recorded before results.json kept these curves get them from their run directory."""
    for cell in cells.values():
        if "lr_curve" in cell and "norm_curve" in cell:
            continue
        records = run_records(at_root(cell["run_dir"]))
        if records:
            cell.setdefault("lr_curve", lr_curve(records))
            cell.setdefault("norm_curve", norm_curve(records))
    return cells


def cell_status(returncode: int, log_text: str) -> str | None:
    """ "ok", "diverged" (exit 3, or a failed torchrun whose ranks said so), None: a failure."""
    if returncode == 0:
        return "ok"
    if returncode == DIVERGED_EXIT or DIVERGED_LINE in log_text:
        return "diverged"
    return None


def run_cell(cell: Cell, spec: dict, log_dir: Path) -> dict:
    """Train one cell under torchrun; its result record (AP curve, wall seconds, status)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{cell.dataset}_{cell.variant}_s{cell.seed}.log"
    print(f"[league] {cell.key}: training, log in {log}", flush=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run(train_command(spec), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    status = cell_status(proc.returncode, log.read_text(encoding="utf-8", errors="replace"))
    if status is None:
        raise SetupError(
            f"{cell.key}: tools/train.py exited with {proc.returncode}; see {log} "
            "(the league stops; finished cells are kept in results.json)"
        )
    run_dir = at_root(spec["run_dir"])
    records = run_records(run_dir)
    curve, lrs, norms = ap_curve(records), lr_curve(records), norm_curve(records)
    cell_id = {"dataset": cell.dataset, "variant": cell.variant, "seed": cell.seed}
    return {
        **cell_id,
        **spec,
        "status": status,
        "seconds": seconds,
        "curve": curve,
        "lr_curve": lrs,
        "norm_curve": norms,
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.mean(values), std


def iterations_to(curve: list[list[float]], target: float) -> int | None:
    """Iterations at the first evaluation with AP >= target; None when never reached."""
    return next((int(step) for _, step, ap in curve if ap >= target), None)


def baseline_target(cells: list[dict]) -> float | None:
    """95% of the multistep baseline's mean final AP over its finished seeds (None: no run)."""
    finals = [c["curve"][-1][2] for c in cells if c["variant"] == BASELINE and _usable(c)]
    return TARGET_FRACTION * statistics.mean(finals) if finals else None


def _usable(cell: dict) -> bool:
    return cell["status"] == "ok" and bool(cell["curve"])


def summarize_variant(cells: list[dict], target: float | None) -> dict:
    """One variant's seeds of one dataset, aggregated: AP, wall time, iterations to target."""
    ok = [c for c in cells if _usable(c)]
    row: dict = {"seeds": len(ok), "diverged": len(cells) - len(ok)}
    if not ok:
        return row
    row["final_AP"] = mean_std([c["curve"][-1][2] for c in ok])
    row["best_AP"] = mean_std([max(p[2] for p in c["curve"]) for c in ok])
    row["seconds"] = mean_std([c["seconds"] for c in ok])
    length = min(len(c["curve"]) for c in ok)
    row["curve_steps"] = [ok[0]["curve"][i][1] for i in range(length)]
    per_eval = [[c["curve"][i][2] for c in ok] for i in range(length)]
    row["curve_mean"] = [statistics.mean(v) for v in per_eval]
    row["curve_min"] = [min(v) for v in per_eval]
    row["curve_max"] = [max(v) for v in per_eval]
    if target is not None:
        reached = [iterations_to(c["curve"], target) for c in ok]
        row["to_target"] = [r for r in reached if r is not None]
    if all(c.get("lr_curve") for c in ok):
        row.update(summarize_lr(ok, row["curve_steps"]))
    if all(c.get("norm_curve") for c in ok):
        row.update(summarize_norms(ok, row["curve_steps"]))
    return row


def summarize_norms(cells: list[dict], eval_steps: list[int]) -> dict:
    """ZENITH's window over the seeds: mean mu at each evaluation, and the final Z = mu / r."""
    per_seed = []
    for cell in cells:
        steps, mus = [p[0] for p in cell["norm_curve"]], [p[1] for p in cell["norm_curve"]]
        per_seed.append([_last_at(steps, mus, e) for e in eval_steps])
    mu = [None if None in v else statistics.mean(v) for v in zip(*per_seed, strict=True)]
    final_z = mean_std([c["norm_curve"][-1][1] / c["norm_curve"][-1][2] for c in cells])
    return {"mu_at_eval": mu, "final_Z": final_z}


def summarize_lr(cells: list[dict], eval_steps: list[int]) -> dict:
    """Step size over the seeds: mean per logged iteration, and at each evaluation's iteration."""
    length = min(len(c["lr_curve"]) for c in cells)
    steps = [p[0] for p in cells[0]["lr_curve"][:length]]
    mean = [statistics.mean(c["lr_curve"][i][1] for c in cells) for i in range(length)]
    return {
        "lr_steps": steps,
        "lr_mean": mean,
        "lr_at_eval": [_last_at(steps, mean, e) for e in eval_steps],
    }


def _last_at(steps: list[int], values: list[float], step: int) -> float | None:
    # The last value logged at or before `step`: the step size the evaluated weights last saw.
    before = [v for s, v in zip(steps, values, strict=True) if s <= step]
    return before[-1] if before else None


def summarize(cells: dict, datasets: list[str], variants: list[str]) -> dict:
    """{dataset: {"target": AP or None, "rows": {variant: summary}}} over the finished cells."""
    out = {}
    for dataset in datasets:
        mine = [c for c in cells.values() if c["dataset"] == dataset]
        target = baseline_target(mine)
        rows = {}
        for variant in variants:
            runs = [c for c in mine if c["variant"] == variant]
            if runs:
                rows[variant] = summarize_variant(runs, target)
        out[dataset] = {"target": target, "rows": rows}
    return out


def _pm(pair: tuple[float, float] | list[float], digits: int) -> str:
    mean, std = pair
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _reach_text(row: dict, target: float | None) -> str:
    if target is None:
        return "n/a (no multistep run)"
    reached = row.get("to_target", [])
    if not reached:
        return "not reached"
    text = _pm(mean_std([float(r) for r in reached]), 0)
    return text if len(reached) == row["seeds"] else f"{text} ({len(reached)}/{row['seeds']})"


def markdown_row(variant: str, row: dict, target: float | None) -> str:
    """One table row: seeds, final/best AP, AP per evaluation, wall time, iterations to 95%."""
    seeds = str(row["seeds"]) + (f" (+{row['diverged']} diverged)" if row["diverged"] else "")
    if not row["seeds"]:
        return f"| {variant} | {seeds} | diverged | | | | |"
    curve = " ".join(f"{ap:.3f}" for ap in row["curve_mean"])
    return (
        f"| {variant} | {seeds} | {_pm(row['final_AP'], 4)} | {_pm(row['best_AP'], 4)} "
        f"| {curve} | {_pm(row['seconds'], 0)} | {_reach_text(row, target)} |"
    )


def lr_table(rows: dict) -> list[str]:
    """Lines of the step-size table: mean over seeds at each evaluation ([] when none logged)."""
    logged = {v: row["lr_at_eval"] for v, row in rows.items() if row.get("lr_at_eval")}
    if not logged:
        return []
    lines = ["", "Step size applied at each evaluation (mean over seeds):", ""]
    lines += ["| variant | step size per evaluation |", "|---|---|"]
    for variant, values in logged.items():
        text = " ".join("–" if v is None else f"{v:.2g}" for v in values)
        lines.append(f"| {variant} | {text} |")
    return lines


def norm_table(rows: dict) -> list[str]:
    """Lines of ZENITH's window table: mu at each evaluation and the final Z ([] when none)."""
    logged = {v: row for v, row in rows.items() if row.get("mu_at_eval")}
    if not logged:
        return []
    lines = ["", "ZENITH's gradient-norm window (mean over seeds): the window mean mu at each"]
    lines += [
        "evaluation, and Z (the largest full-window mean) at the end; eta_t = eta_0 mu / Z.",
        "",
    ]
    lines += ["| variant | mu per evaluation | final Z |", "|---|---|---|"]
    for variant, row in logged.items():
        text = " ".join("–" if v is None else f"{v:.2f}" for v in row["mu_at_eval"])
        lines.append(f"| {variant} | {text} | {_pm(row['final_Z'], 2)} |")
    return lines


def render_markdown(summary: dict, command: str = "") -> str:
    """league.md: one table per dataset (± is the sample standard deviation over seeds)."""
    lines = ["# Optimizer league", ""]
    lines.append(
        "Mean ± sample standard deviation over seeds. *AP per evaluation*: mean primary AP "
        "after each epoch. *It. to 95%*: iterations until the first evaluation at or above "
        "95% of the multistep baseline's mean final AP (mean ± std over the seeds that reach "
        "it; (k/n) when only k of n do). *Wall s*: the whole torchrun run, evaluations "
        "included."
    )
    for dataset, part in summary.items():
        target = part["target"]
        goal = "no multistep run" if target is None else f"95% target AP {target:.4f}"
        lines += ["", f"## {dataset} ({goal})", ""]
        lines.append(
            "| variant | seeds | final AP | best AP | AP per evaluation | wall s "
            "| it. to 95% of multistep |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        lines += [markdown_row(v, row, target) for v, row in part["rows"].items()]
        lines += lr_table(part["rows"])
        lines += norm_table(part["rows"])
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def plot_league(summary: dict, out: Path) -> Path | None:
    """league.png: AP against iteration per dataset, mean and min-max band per variant."""
    if find_spec("matplotlib") is None:
        print(f"league.png not written: plotting needs matplotlib: {PLOT_HINT}", flush=True)
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
    if variant in MAIN_VARIANTS:
        return plt.get_cmap("tab10").colors[MAIN_VARIANTS.index(variant)], "-"
    others = [v for v in VARIANTS if v not in MAIN_VARIANTS]
    palette = plt.get_cmap("Dark2").colors
    return palette[others.index(variant) % len(palette)], "--"


def reproduce_command(args: argparse.Namespace) -> str:
    """The command line that re-creates (or, run again, re-reads) this league."""
    parts = ["python", "benchmarks/league.py", "--datasets", *args.datasets]
    parts += ["--variants", *args.variants, "--seeds", *map(str, args.seeds)]
    if args.epochs:
        parts += ["--epochs", str(args.epochs)]
    parts += ["--nproc", str(args.nproc), "--out", args.out]
    if args.report_only:
        parts.append("--report-only")
    if args.model != "faster_rcnn_r18":
        parts += ["--model", args.model]
    if args.configs != "configs/league":
        parts += ["--configs", args.configs]
    for override in args.overrides:
        parts += ["--set", override]
    return shlex.join(parts)


def run_league(args: argparse.Namespace) -> dict:
    """Train the cells results.json lacks, saving it after each; the summary of all of them."""
    out = at_root(args.out)
    results_path = out / "results.json"
    cells = league_cells(args.datasets, args.variants, args.seeds)
    specs = {c.key: cell_spec(args, c) for c in cells}
    done = with_curves(load_results(results_path))
    todo = pending_cells(cells, specs, done, str(results_path))
    print(f"[league] {len(cells) - len(todo)} of {len(cells)} cells done, {len(todo)} to run")
    if args.report_only:
        if todo:
            print("[league] --report-only, left out: " + " ".join(c.key for c in todo))
        todo = []
    for cell in todo:
        done[cell.key] = run_cell(cell, specs[cell.key], out / "logs")
        save_results(results_path, done)
    wanted = {c.key: done[c.key] for c in cells if c.key in done}
    return summarize(wanted, args.datasets, args.variants)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run what is missing, write league.md and league.png, print the table."""
    args = get_args_parser().parse_args(argv)
    with exit_on_user_error():
        summary = run_league(args)
        out = at_root(args.out)
        command = reproduce_command(args)
        markdown = render_markdown(summary, command)
        (out / "league.md").write_text(markdown, encoding="utf-8")
        plot_league(summary, out / "league.png")
        print(markdown)
        print(f"Reproduce: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
