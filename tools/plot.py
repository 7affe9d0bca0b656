"""Plot what ZENITH did: LR, ratio, gradient norm, loss per iteration and mAP per epoch.

    python tools/plot.py runs/demo_zenith runs/demo_sgd --out runs/compare.png

Each argument is a run directory (or its metrics.jsonl); several runs are overlaid, labelled by
directory name. Needs matplotlib (`pip install -e '.[plot]'`).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from zenith_det import storage  # noqa: E402
from zenith_det.errors import DataError, SetupError, exit_on_user_error  # noqa: E402
from zenith_det.metrics_log import read_metrics  # noqa: E402
from zenith_det.run_dir import check_writable_dir  # noqa: E402

INSTALL_HINT = "pip install -e '.[plot]'"

PANELS = (
    ("lr", "learning rate"),
    ("zenith_ratio", "ZENITH ratio mu/Z"),
    ("grad_norm", "gradient norm"),
    ("loss", "loss"),
)


def get_args_parser() -> argparse.ArgumentParser:
    """The plot command's arguments."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="run directories or metrics.jsonl files")
    parser.add_argument("--out", default=None, help="PNG path (default: <first run>/training.png)")
    return parser


def load_run(path: str) -> tuple[str, list[dict], list[dict]]:
    """(label, train records, eval records) of one run."""
    file = Path(path)
    if file.is_dir():
        file = file / "metrics.jsonl"
    if not file.is_file():
        raise DataError(f"{file}: not found (give a run directory or its metrics.jsonl)")
    records = read_metrics(file)
    bad = next((i for i, r in enumerate(records) if not _is_record(r)), None)
    if bad is not None:
        raise DataError(f"{file}: record {bad} is not a metrics record (no 'type' and 'step')")
    return (
        file.parent.name,
        [r for r in records if r["type"] == "train"],
        [r for r in records if r["type"] == "eval"],
    )


def _run_dir(path: str) -> Path:
    return Path(path) if Path(path).is_dir() else Path(path).parent


def _is_record(record: object) -> bool:
    return isinstance(record, dict) and "type" in record and "step" in record


def import_pyplot():
    """matplotlib.pyplot with the file-only Agg backend, or a SetupError naming the install."""
    try:
        import matplotlib
    except ImportError as exc:  # an optional extra: say how to get it
        raise SetupError(f"plotting needs matplotlib: {INSTALL_HINT}") from exc
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_runs(runs: list[tuple[str, list[dict], list[dict]]], out: Path) -> Path:
    """Draw the five panels for every run and save the PNG."""
    plt = import_pyplot()
    fig, axes = plt.subplots(1, 5, figsize=(22, 4))
    for label, train, evals in runs:
        steps = [r["step"] for r in train]
        for ax, (key, title) in zip(axes[:4], PANELS, strict=True):
            values = [r.get(key) for r in train]
            if any(v is not None for v in values):
                ax.plot(steps, [float("nan") if v is None else v for v in values], label=label)
            if key == "grad_norm":
                means = [r.get("grad_norm_window_mean") for r in train]
                if any(m is not None for m in means):
                    ax.plot(
                        steps,
                        [float("nan") if m is None else m for m in means],
                        linestyle="--",
                        label=f"{label} (window mean)",
                    )
            ax.set_title(title)
            ax.set_xlabel("iteration")
        _plot_map(axes[4], label, evals)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with storage.writing(out.parent, "plot folder"):
        out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format=out.suffix.lstrip(".") or "png")
    plt.close(fig)
    storage.atomic_write_bytes(out, buffer.getvalue(), "plot", durable=False)
    return out


def _plot_map(ax, label: str, evals: list[dict]) -> None:
    epochs = [r["epoch"] + 1 for r in evals]
    ax.plot(epochs, [r["primary_AP"] for r in evals], marker="o", label=label)
    ax.set_title("primary AP (val)")
    ax.set_xlabel("epoch")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = get_args_parser().parse_args(argv)
    with exit_on_user_error():
        import_pyplot()  # before reading the runs: a missing install is the first thing to fix
        runs = [load_run(p) for p in args.runs]
        out = Path(args.out) if args.out else _run_dir(args.runs[0]) / "training.png"
        if out.is_dir():
            raise SetupError(f"--out {out} is a directory: give the PNG file's path")
        check_writable_dir(out.parent, "--out folder")
        print(plot_runs(runs, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
