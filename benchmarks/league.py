"""The optimizer league: ZENITH against the optimizers a user would otherwise pick.

    python benchmarks/league.py --datasets demo --seeds 0 1 2 --epochs 8 --nproc 2 \\
        --variants zenith multistep cosine constant dadapt_sgd prodigy schedulefree_sgd

Every (dataset, variant, seed) cell is one real `torchrun tools/train.py` run, evaluated after
every epoch, in `<out>/<dataset>/<variant>_s<seed>`. A dataset is a folder
`configs/league/<dataset>/` holding `<model>_zenith.yaml` and `<model>_multistep.yaml` (the
dataset's tuned multistep baseline); a variant (benchmarks/league_variants.py) is one of these
two plus `--set` overrides, the same for every dataset. Relative paths (`--out`, `--configs`)
are relative to the repository root, where the runs are started.

Fine-tuning regime: `--init pretrained` starts every cell from the source model of `--model`
(benchmarks/pretrain.py: trained once on a larger generated set and cached in
`runs/pretrained/<model>-<config hash>/`, pretrained first when the cache lacks it) through our
normal fine-tuning path: `model.weights` = its best.pth, FrozenBatchNorm2d and 3 trainable
stages, the class- and keypoint-count-dependent predictor tensors re-initialised. Those cells are
`<out>/<dataset>+pretrained/<variant>_s<seed>` and get their own table; `--init scratch
pretrained` runs both starts, and league.md then says whether the pretrained start paid.
Source configs from another folder (`--source-configs configs/league/source_natural`) are
another start: `<dataset>+pretrained-<folder name>`, beside the first in the same results.json.

Resumable: `<out>/results.json` is rewritten atomically after every finished cell, and a cell
found there is not run again. A cell that was interrupted is run again from scratch (its old run
directory is moved aside by `tools/train.py --overwrite`, never deleted). A run that stops
itself on non-finite losses (exit code 3) is a result too: it is recorded as diverged.

Written: `<out>/results.json`, `<out>/league.md` (per group: mean ± sample standard
deviation over seeds of the final and best AP and of the wall time, the mean AP after each
evaluation, and the iterations to reach 95% of the multistep baseline's mean final AP) and
`<out>/league.png` (top: AP against iteration, mean over seeds with the min-max band; bottom:
the step size each variant applied, mean over seeds; needs the `plot` extra). The Markdown and
the command that reproduces it are printed at the end. `--report-only` trains nothing: it writes
the table and plot of the requested cells that results.json already holds (e.g. main rows with 3
seeds next to ablations with 1).

`--reuse OTHER/results.json` copies a missing cell from another league when that one was
launched alike (the same config, overrides and ranks; the variant's name may differ), instead
of training it again; the record keeps its run directory and says where it came from
(`reused_from`), and league.md lists it.

The step size is what the optimizer applied, read from the run's metrics.jsonl at every log
period: `effective_lr` where the optimizer logs one (D-Adaptation's and Prodigy's d times lr,
schedule-free's warmed-up lr), otherwise `lr` (SGD with its schedule, ZENITH's eta_t). Prodigy's
is an Adam step, so its scale is not comparable with the SGD-style ones. For ZENITH runs the
table also shows the gradient-norm window: its mean mu at each evaluation and the final Z, which
show why eta_t = eta_0 mu / Z is where it is. benchmarks/league_mechanism.py plots that window.

Modules: league_variants.py (the variants), league_cells.py (cells, their runs, results.json),
league_tables.py (summaries, league.md), league_plots.py (league.png), league_runs.py (one
torchrun run and its metrics), pretrain.py (the cached source models).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules, also imported

import pretrain  # noqa: E402
from league_cells import (  # noqa: E402
    INITS,
    cell_spec,
    league_cells,
    load_results,
    pending_cells,
    reused_cells,
    run_cell,
    save_results,
    source_spec,
    with_curves,
)
from league_plots import plot_league  # noqa: E402
from league_runs import at_root  # noqa: E402
from league_tables import render_markdown, summarize  # noqa: E402
from league_variants import MAIN_VARIANTS, VARIANTS  # noqa: E402

from zenith_det.cli import add_set_argument  # noqa: E402
from zenith_det.errors import SetupError, exit_on_user_error  # noqa: E402

DEFAULTS = {
    "model": "faster_rcnn_r18",
    "configs": "configs/league",
    "source_configs": "configs/league/source",
    "pretrained_cache": "runs/pretrained",
}


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
    parser.add_argument("--model", default=DEFAULTS["model"], help="config name prefix")
    parser.add_argument(
        "--configs", default=DEFAULTS["configs"], help="folder of the dataset folders"
    )
    parser.add_argument(
        "--init",
        nargs="+",
        default=["scratch"],
        choices=INITS,
        help="how the cells' models start: from scratch, or fine-tuned from the cached source "
        "model (benchmarks/pretrain.py); both gives both",
    )
    parser.add_argument(
        "--source-configs",
        default=DEFAULTS["source_configs"],
        help="folder of the source configs <model>_multistep.yaml (--init pretrained)",
    )
    parser.add_argument(
        "--pretrained-cache",
        default=DEFAULTS["pretrained_cache"],
        help="where the source models are kept (--init pretrained)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: table and plot of the requested cells results.json holds",
    )
    parser.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        metavar="RESULTS_JSON",
        help="other leagues' results.json: a missing cell launched there alike (config, "
        "overrides, ranks) is copied instead of trained",
    )
    add_set_argument(parser, "extra override for every run (repeatable)")
    return parser


def reproduce_command(args: argparse.Namespace) -> str:
    """The command line that re-creates (or, run again, re-reads) this league."""
    parts = ["python", "benchmarks/league.py", "--datasets", *args.datasets]
    parts += ["--variants", *args.variants, "--seeds", *map(str, args.seeds)]
    if args.epochs:
        parts += ["--epochs", str(args.epochs)]
    parts += ["--nproc", str(args.nproc), "--out", args.out]
    if args.report_only:
        parts.append("--report-only")
    for name in ("model", "configs"):
        if getattr(args, name) != DEFAULTS[name]:
            parts += [f"--{name}", getattr(args, name)]
    if args.init != ["scratch"]:
        parts += ["--init", *args.init]
    for name in ("source_configs", "pretrained_cache"):
        if getattr(args, name) != DEFAULTS[name]:
            parts += [f"--{name.replace('_', '-')}", getattr(args, name)]
    if args.reuse:
        parts += ["--reuse", *args.reuse]
    for override in args.overrides:
        parts += ["--set", override]
    return shlex.join(parts)


def source_label(args: argparse.Namespace) -> str:
    """ "" for the default source configs, else their folder's name (the cells' group says it)."""
    if at_root(args.source_configs).resolve() == at_root(DEFAULTS["source_configs"]).resolve():
        return ""
    return Path(args.source_configs).name


def _reuse_results(path: str) -> dict:
    # A --reuse file that is not there is a typo, not an empty league.
    if not at_root(path).is_file():
        raise SetupError(f"--reuse {path}: no such file (expected another league's results.json)")
    return load_results(at_root(path))


def run_league(args: argparse.Namespace) -> dict:
    """Train the cells results.json lacks, saving it after each; the summary of all of them."""
    out = at_root(args.out)
    results_path = out / "results.json"
    cells = league_cells(
        args.datasets, args.variants, args.seeds, tuple(args.init), source_label(args)
    )
    specs = {c.key: cell_spec(args, c) for c in cells}
    done = with_curves(load_results(results_path))
    todo = pending_cells(cells, specs, done, str(results_path))
    others = {path: _reuse_results(path) for path in args.reuse}
    reused = reused_cells(todo, specs, others)
    if reused:
        print(
            "[league] reused, launched alike: "
            + ", ".join(f"{key} <- {record['reused_from']}" for key, record in reused.items())
        )
        done.update(with_curves(reused))
        save_results(results_path, done)
        todo = [c for c in todo if c.key not in reused]
    print(f"[league] {len(cells) - len(todo)} of {len(cells)} cells done, {len(todo)} to run")
    if args.report_only:
        if todo:
            print("[league] --report-only, left out: " + " ".join(c.key for c in todo))
        todo = []
    if any(c.init == "pretrained" for c in todo):
        # Before the first fine-tuning cell: trains the source model only when it is not cached.
        pretrain.ensure_pretrained(source_spec(args), at_root(args.pretrained_cache) / "logs")
    for cell in todo:
        done[cell.key] = run_cell(cell, specs[cell.key], out / "logs")
        save_results(results_path, done)
    wanted = {c.key: done[c.key] for c in cells if c.key in done}
    groups = list(dict.fromkeys(c.group for c in cells))
    return summarize(wanted, groups, args.variants)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run what is missing, write league.md and league.png, print the table."""
    args = get_args_parser().parse_args(argv)
    with exit_on_user_error():
        summary = run_league(args)
        out = at_root(args.out)
        out.mkdir(parents=True, exist_ok=True)  # --report-only of a league not started yet
        command = reproduce_command(args)
        markdown = render_markdown(summary, command)
        (out / "league.md").write_text(markdown, encoding="utf-8")
        plot_league(summary, out / "league.png")
        print(markdown)
        print(f"Reproduce: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
