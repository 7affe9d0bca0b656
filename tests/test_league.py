"""benchmarks/league.py: aggregation, resumability, rendering, and one tiny real league."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training_setup import make_tiny_dataset, tiny_config, write_config
from zenith_det.config import load_config
from zenith_det.errors import ConfigError, SetupError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the league's modules import each other as scripts

import league  # noqa: E402
import league_cells  # noqa: E402
import league_plots  # noqa: E402
import league_runs  # noqa: E402
import league_tables  # noqa: E402
import league_variants  # noqa: E402


def _cell(dataset: str, variant: str, seed: int, aps: list[float], status: str = "ok") -> dict:
    """A results.json record with evaluations every 10 iterations."""
    curve = [[i + 1, 10 * (i + 1), ap] for i, ap in enumerate(aps)]
    return {
        "dataset": dataset,
        "variant": variant,
        "seed": seed,
        "config": "c.yaml",
        "overrides": [],
        "nproc": 2,
        "run_dir": "r",
        "status": status,
        "seconds": 100.0 + seed,
        "curve": curve,
    }


def _league_cells() -> dict:
    cells = [
        _cell("demo", "multistep", 0, [0.1, 0.2, 0.30]),
        _cell("demo", "multistep", 1, [0.1, 0.2, 0.32]),
        _cell("demo", "multistep", 2, [0.1, 0.2, 0.28]),  # mean 0.30 -> target 0.285
        _cell("demo", "zenith", 0, [0.1, 0.29, 0.25]),  # reaches at 20
        _cell("demo", "zenith", 1, [0.1, 0.2, 0.30]),  # reaches at 30
        _cell("demo", "zenith", 2, [0.1, 0.2, 0.21]),  # never
        _cell("demo", "constant", 0, [0.05, 0.1, 0.2]),
        _cell("demo", "prodigy", 0, [0.1], status="diverged"),
    ]
    return {f"{c['dataset']}/{c['variant']}_s{c['seed']}": c for c in cells}


def test_mean_std_and_iterations_to_target():
    mean, std = league_tables.mean_std([0.2, 0.3, 0.4])
    assert mean == pytest.approx(0.3) and std == pytest.approx(0.1)
    assert league_tables.mean_std([0.5]) == (0.5, 0.0)
    curve = [[1, 10, 0.1], [2, 20, 0.3], [3, 30, 0.25]]
    assert league_tables.iterations_to(curve, 0.28) == 20
    assert league_tables.iterations_to(curve, 0.3) == 20  # reaching the target exactly counts
    assert league_tables.iterations_to(curve, 0.31) is None


def test_summarize_aggregates_seeds_and_target():
    summary = league_tables.summarize(
        _league_cells(), ["demo"], ["zenith", "multistep", "constant"]
    )
    part = summary["demo"]
    assert part["target"] == pytest.approx(0.95 * 0.30)
    zen = part["rows"]["zenith"]
    assert zen["seeds"] == 3 and zen["diverged"] == 0
    assert zen["final_AP"][0] == pytest.approx((0.25 + 0.30 + 0.21) / 3)
    assert zen["best_AP"][0] == pytest.approx((0.29 + 0.30 + 0.21) / 3)
    assert zen["to_target"] == [20, 30]
    assert zen["curve_steps"] == [10, 20, 30]
    assert zen["curve_min"][1] == pytest.approx(0.2) and zen["curve_max"][1] == 0.29
    assert part["rows"]["multistep"]["to_target"] == [30, 30]  # 0.28 < 0.285: seed 2 misses
    assert part["rows"]["constant"]["to_target"] == []
    assert "prodigy" not in part["rows"]  # not asked for


def test_summarize_without_baseline_and_with_divergence():
    cells = _league_cells()
    no_base = {k: c for k, c in cells.items() if c["variant"] != "multistep"}
    part = league_tables.summarize(no_base, ["demo"], ["zenith", "prodigy"])["demo"]
    assert part["target"] is None
    assert "to_target" not in part["rows"]["zenith"]
    assert part["rows"]["prodigy"] == {"seeds": 0, "diverged": 1}


def test_a_group_without_finished_cells_is_left_out_of_tables_and_plot(tmp_path: Path):
    summary = league_tables.summarize(
        _league_cells(), ["demo", "demo+pretrained"], ["zenith", "multistep"]
    )
    assert list(summary) == ["demo"]
    assert "## demo+pretrained" not in league_tables.render_markdown(summary)
    assert league_plots.plot_league({}, tmp_path / "league.png") is None
    assert not (tmp_path / "league.png").exists()


def test_render_markdown():
    summary = league_tables.summarize(
        _league_cells(), ["demo"], ["zenith", "multistep", "constant", "prodigy"]
    )
    text = league_tables.render_markdown(summary)
    assert "## demo (95% target AP 0.2850)" in text
    assert "| zenith | 3 | 0.2533 ± 0.0451 | 0.2667 ± 0.0493 | 0.100 0.230 0.253 |" in text
    assert "| 25 ± 7 (2/3) |" in text  # only 2 of the 3 seeds reach the target
    assert "| constant | 1 |" in text and "| not reached |" in text
    assert "| prodigy | 0 (+1 diverged) | diverged |" in text
    no_base = {k: c for k, c in _league_cells().items() if c["variant"] == "zenith"}
    assert "n/a (no multistep run)" in league_tables.render_markdown(
        league_tables.summarize(no_base, ["demo"], ["zenith"])
    )


def test_a_group_says_which_machines_its_cells_ran_on_once_any_recorded_one():
    cells = _league_cells()
    text = league_tables.render_markdown(league_tables.summarize(cells, ["demo"], ["zenith"]))
    assert "Ran on:" not in text  # results from before cells kept their machine
    cells["demo/zenith_s0"]["machine"] = "AMD EPYC, 2 cores"
    text = league_tables.render_markdown(league_tables.summarize(cells, ["demo"], ["zenith"]))
    assert "Ran on: AMD EPYC, 2 cores (1 cell); not recorded (7 cells)" in text


def test_machine_names_the_cpu_and_its_cores():
    name, cores = league_runs.machine().rsplit(", ", 1)
    assert name and cores == f"{os.cpu_count()} cores"


def test_verdict_table_sets_zenith_against_multistep_and_the_best_automatic_optimizer():
    cells = _league_cells()
    cells["demo/schedulefree_sgd_s0"] = _cell("demo", "schedulefree_sgd", 0, [0.1, 0.2, 0.26])
    cells["demo/dadapt_sgd_s0"] = _cell("demo", "dadapt_sgd", 0, [0.1, 0.2, 0.22])
    variants = ["zenith", "multistep", "constant", "prodigy", "dadapt_sgd", "schedulefree_sgd"]
    text = league_tables.render_markdown(league_tables.summarize(cells, ["demo"], variants))
    verdict = text.split("## When ZENITH pays off")[1]
    assert "| demo | zenith | 3 | 0.2533 ± 0.0451 | 0.2667 ± 0.0493 | 25 ± 7 (2/3) |" in verdict
    assert "| -0.0467 |" in verdict  # zenith's mean final AP against multistep's 0.30
    assert "| demo | multistep | 3 | 0.3000 ± 0.0200 |" in verdict and "| +0.0000 |" in verdict
    # prodigy diverged, so the best automatic row is schedule-free SGD (0.26 > 0.22)
    assert "| demo | schedulefree_sgd | 1 | 0.2600 ± 0.0000 |" in verdict
    assert "dadapt_sgd |" not in verdict and "constant" not in verdict.split("|---|")[-1]
    no_zenith = {k: c for k, c in cells.items() if c["variant"] != "zenith"}
    summary = league_tables.summarize(no_zenith, ["demo"], variants)
    assert "When ZENITH pays off" not in league_tables.render_markdown(summary)


def test_plot_league_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    summary = league_tables.summarize(_league_cells(), ["demo"], ["zenith", "multistep", "prodigy"])
    out = league_plots.plot_league(summary, tmp_path / "league.png")
    assert out is not None and out.read_bytes().startswith(b"\x89PNG")


def test_plot_league_without_matplotlib_names_the_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # how Python marks a module absent
    summary = league_tables.summarize(_league_cells(), ["demo"], ["zenith"])
    assert league_plots.plot_league(summary, tmp_path / "league.png") is None
    assert not (tmp_path / "league.png").exists()
    assert "pip install -e '.[plot]'" in capsys.readouterr().out


def _args(*extra: str):
    return league.get_args_parser().parse_args(["--out", "runs/x", *extra])


def test_cell_spec_variants_on_the_demo_configs():
    args = _args("--epochs", "4")
    spec = league_cells.cell_spec(args, league_cells.Cell("demo", "multistep", 1))
    assert spec["config"] == "configs/league/demo/faster_rcnn_r18_multistep.yaml"
    assert spec["run_dir"] == "runs/x/demo/multistep_s1"
    # 6 and 7 of 8 epochs -> 3 and 4 of 4; the seed and an evaluation after every epoch.
    assert spec["overrides"] == [
        "schedule.milestones=[3, 4]",
        "train.epochs=4",
        "train.seed=1",
        "train.eval_period=1",
    ]
    free = league_cells.cell_spec(args, league_cells.Cell("demo", "schedulefree_sgd", 0))[
        "overrides"
    ]
    assert "optimizer.lr=0.2" in free and not any("milestones" in o for o in free)
    lr4 = league_cells.cell_spec(args, league_cells.Cell("demo", "zenith_lr4", 0))
    assert lr4["config"].endswith("faster_rcnn_r18_zenith.yaml")
    assert "optimizer.lr=0.08" in lr4["overrides"]
    assert league_cells.scaled_milestones([6, 7], 8, 1) == [1]  # merged, still strictly increasing


def test_cell_spec_unknown_dataset_is_one_config_error():
    with pytest.raises(ConfigError, match="nope/faster_rcnn_r18_zenith.yaml"):
        league_cells.cell_spec(_args(), league_cells.Cell("nope", "zenith", 0))


def test_pending_cells_skips_finished_and_refuses_changed_ones():
    args = _args("--epochs", "2")
    cells = league_cells.league_cells(["demo"], ["zenith", "constant"], [0, 1])
    specs = {c.key: league_cells.cell_spec(args, c) for c in cells}
    done = {key: {**specs[key], "status": "ok"} for key in ("demo/zenith_s0", "demo/constant_s1")}
    todo = league_cells.pending_cells(cells, specs, done)
    assert [c.key for c in todo] == ["demo/constant_s0", "demo/zenith_s1"]
    assert league_cells.pending_cells(cells, specs, {k: {**s} for k, s in specs.items()}) == []
    done["demo/zenith_s0"]["overrides"] = ["train.epochs=8"]
    with pytest.raises(SetupError, match="demo/zenith_s0 was run with"):
        league_cells.pending_cells(cells, specs, done)
    done["demo/zenith_s0"] = {**specs["demo/zenith_s0"], "nproc": 1}  # another batch size
    with pytest.raises(SetupError, match="'nproc': 1}, now asked with"):
        league_cells.pending_cells(cells, specs, done)


def test_results_round_trip_and_bad_file(tmp_path):
    path = tmp_path / "results.json"
    assert league_cells.load_results(path) == {}
    cells = _league_cells()
    league_cells.save_results(path, cells)
    assert league_cells.load_results(path) == cells
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left
    path.write_text("{")
    with pytest.raises(SetupError, match="results.json: not valid JSON"):
        league_cells.load_results(path)


def test_train_command_overwrites_only_an_unfinished_run(tmp_path):
    spec = {"config": "c.yaml", "overrides": ["train.seed=0"], "nproc": 2, "run_dir": "r"}
    spec["run_dir"] = str(tmp_path / "r")
    cmd = league_runs.train_command(spec)
    assert "--nproc_per_node=2" in cmd and cmd[-2:] == ["--set", "train.seed=0"]
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.jsonl").write_text("")
    assert league_runs.train_command(spec)[-1] == "--overwrite"


@pytest.mark.slow
def test_tiny_league_end_to_end_then_nothing_to_run(tmp_path):
    data = make_tiny_dataset(tmp_path / "data")
    configs = tmp_path / "configs" / "tiny"
    configs.mkdir(parents=True)
    write_config(tiny_config(data, tmp_path / "unused"), configs / "faster_rcnn_r18_zenith.yaml")
    out = tmp_path / "out"
    interrupted = out / "tiny" / "zenith_s0"  # a cell stopped before results.json got it
    interrupted.mkdir(parents=True)
    (interrupted / "metrics.jsonl").write_text('{"type": "eval", "step": 99}\n')
    cmd = [sys.executable, "benchmarks/league.py", "--configs", str(tmp_path / "configs")]
    cmd += ["--datasets", "tiny", "--variants", "zenith", "--seeds", "0", "--epochs", "1"]
    cmd += ["--nproc", "1", "--out", str(out), "--set", "train.max_iters_per_epoch=2"]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    results = json.loads((out / "results.json").read_text())["cells"]
    cell = results["tiny/zenith_s0"]
    assert cell["status"] == "ok" and len(cell["curve"]) == 1 and cell["curve"][0][1] == 2
    assert "lr_curve" in cell  # the step sizes travel with the results
    assert cell["machine"] == league_runs.machine()
    table = (out / "league.md").read_text()
    assert "| zenith | 1 |" in table and "n/a (no multistep run)" in table
    assert "Reproduce: python benchmarks/league.py --datasets tiny" in first.stdout
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 of 1 cells done, 0 to run" in second.stdout
    assert json.loads((out / "results.json").read_text())["cells"] == results
    # The interrupted run was moved aside once (first invocation) and nothing ran again.
    assert len(list(tmp_path.glob("out/tiny/zenith_s0.old-*"))) == 1


def test_lr_curve_reads_the_applied_step_size(tmp_path):
    records = [
        {"type": "train", "step": 4, "lr": 1.0, "effective_lr": 0.003},  # an automatic-LR run
        {"type": "eval", "step": 4, "primary_AP": 0.1, "epoch": 0},
        {"type": "train", "step": 8, "lr": 0.02},  # SGD or ZENITH: lr is what is applied
    ]
    text = "".join(json.dumps(r) + "\n" for r in records)
    (tmp_path / "metrics.jsonl").write_text(text)
    assert league_runs.lr_curve(league_runs.run_records(tmp_path)) == [[4, 0.003], [8, 0.02]]
    assert league_runs.lr_curve(league_runs.run_records(tmp_path / "missing")) == []


def test_step_sizes_are_averaged_over_seeds_and_read_at_each_evaluation():
    cells = _league_cells()
    for seed, scale in ((0, 1.0), (1, 3.0), (2, 2.0)):
        lrs = [[5, 0.01], [15, 0.02], [25, 0.004], [30, 0.002]]
        cells[f"demo/zenith_s{seed}"]["lr_curve"] = [[s, v * scale] for s, v in lrs]
    row = league_tables.summarize(cells, ["demo"], ["zenith", "constant"])["demo"]["rows"]["zenith"]
    assert row["lr_steps"] == [5, 15, 25, 30]
    assert row["lr_mean"] == pytest.approx([0.02, 0.04, 0.008, 0.004])
    assert row["lr_at_eval"] == pytest.approx([0.02, 0.04, 0.004])  # evaluations at 10, 20, 30
    text = league_tables.render_markdown(
        league_tables.summarize(cells, ["demo"], ["zenith", "constant"])
    )
    assert "| zenith | 0.02 0.04 0.004 |" in text
    assert "| constant |" not in text.split("Step size applied")[1]  # no step sizes recorded


def test_report_only_trains_nothing_and_tables_what_is_there(tmp_path, capsys):
    args = league.get_args_parser().parse_args(["--out", str(tmp_path), "--epochs", "8"])
    spec = league_cells.cell_spec(args, league_cells.Cell("demo", "zenith", 0))
    cell = {**_cell("demo", "zenith", 0, [0.1, 0.2]), **spec}
    league_cells.save_results(tmp_path / "results.json", {"demo/zenith_s0": cell})
    argv = ["--datasets", "demo", "--variants", "zenith", "--seeds", "0", "1", "--epochs", "8"]
    assert league.main([*argv, "--out", str(tmp_path), "--report-only"]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 cells done, 1 to run" in out
    assert "--report-only, left out: demo/zenith_s1" in out
    assert "| zenith | 1 | 0.2000 ± 0.0000 |" in (tmp_path / "league.md").read_text()
    assert not (tmp_path / "demo").exists() and not (tmp_path / "logs").exists()


def test_reuse_copies_only_a_cell_launched_alike_and_says_so(tmp_path, capsys):
    # Another league ran `multistep_all_stages` = `multistep` + one --set: the same launch.
    other, out = tmp_path / "other", tmp_path / "out"
    argv = ["--datasets", "demo", "--epochs", "8"]
    args = league.get_args_parser().parse_args([*argv, "--out", str(other)])
    argv += ["--set", "model.trainable_backbone_layers=5"]
    alike = league_cells.Cell("demo", "multistep_all_stages", 1)
    wider = league_cells.Cell("demo", "multistep_all_stages", 0)  # with AMP: another launch
    records = {
        c.key: {**_cell("demo", c.variant, c.seed, [0.1, 0.3]), **league_cells.cell_spec(args, c)}
        for c in (alike, wider)
    }
    records[wider.key]["overrides"] = [*records[wider.key]["overrides"], "train.amp=true"]
    league_cells.save_results(other / "results.json", records)
    argv = ["--variants", "multistep", "--seeds", "0", "1", "--out", str(out), *argv]
    reuse = ["--reuse", str(other / "results.json"), "--report-only"]
    assert league.main([*argv, *reuse]) == 0
    printed = capsys.readouterr().out
    assert f"demo/multistep_s1 <- {other / 'results.json'}: demo/multistep_all_stages_s1" in printed
    assert "1 of 2 cells done, 1 to run" in printed and "left out: demo/multistep_s0" in printed
    copied = league_cells.load_results(out / "results.json")
    assert list(copied) == ["demo/multistep_s1"]
    assert copied["demo/multistep_s1"]["variant"] == "multistep"
    assert copied["demo/multistep_s1"]["run_dir"] == records[alike.key]["run_dir"]
    table = (out / "league.md").read_text()
    assert "| multistep | 1 | 0.3000 ± 0.0000 |" in table
    assert "Copied, not trained here" in table and "multistep_all_stages_s1" in table
    assert "--reuse" in printed.split("Reproduce: ")[1]
    with pytest.raises(SystemExit) as stopped:
        league.main([*argv, "--reuse", str(tmp_path / "nope.json")])
    assert stopped.value.code == 2 and "nope.json: no such file" in capsys.readouterr().err


def test_zenith_window_is_read_and_tabled(tmp_path):
    records = [
        {
            "type": "train",
            "step": 4,
            "lr": 0.01,
            "grad_norm_window_mean": "nan",
            "zenith_ratio": 1.0,
        },
        {"type": "train", "step": 8, "lr": 0.01, "grad_norm_window_mean": 3.0, "zenith_ratio": 0.5},
        {"type": "train", "step": 9, "lr": 0.02},  # not a ZENITH record
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert league_runs.norm_curve(league_runs.run_records(tmp_path)) == [
        [8, 3.0, 0.5]
    ]  # "nan": history not started yet
    # The momentum_snr option logs its own window mean, which is then the window read.
    snr = [{"type": "train", "step": 8, "momentum_snr_window_mean": 0.4, "zenith_ratio": 0.8}]
    (tmp_path / "metrics.jsonl").write_text(json.dumps(snr[0]) + "\n")
    assert league_runs.norm_curve(league_runs.run_records(tmp_path)) == [[8, 0.4, 0.8]]
    cells = _league_cells()
    for seed, mu in ((0, 2.0), (1, 4.0), (2, 3.0)):
        cells[f"demo/zenith_s{seed}"]["norm_curve"] = [[5, 8.0, 1.0], [25, mu, mu / 8.0]]
    text = league_tables.render_markdown(
        league_tables.summarize(cells, ["demo"], ["zenith", "multistep"])
    )
    assert "| zenith | 8.00 8.00 3.00 | 8.00 ± 0.00 |" in text  # evaluations at 10, 20, 30
    window = text.split("gradient-norm window")[1].split("## When ZENITH pays off")[0]
    assert "| zenith |" in window and "| multistep |" not in window


def test_mechanism_tells_the_momentum_snr_window_by_its_config_not_its_name(tmp_path):
    import league_mechanism

    configs = ROOT / "configs/league/shapes_target"
    zenith = {"config": str(configs / "keypoint_rcnn_r18_zenith.yaml"), "overrides": []}
    # A dataset or variant name with "_snr" in it says nothing about the signal; the override does.
    assert league_mechanism.window_signal({**zenith, "dataset": "cells_snr"}) == "grad_norm"
    snr = {**zenith, "overrides": ["optimizer.signal=momentum_snr", "train.seed=0"]}
    assert league_mechanism.window_signal(snr) == "momentum_snr"
    # A config that sets the signal itself (through its _base_ files' chain), with no override.
    child = {"_base_": [zenith["config"]], "optimizer": {"signal": "momentum_snr"}}
    write_config(child, tmp_path / "snr.yaml")
    assert league_mechanism.window_signal({"config": str(tmp_path / "snr.yaml")}) == "momentum_snr"
    # A league read where its config is gone: its override, else the paper's signal, the default.
    gone = {"config": str(tmp_path / "gone.yaml"), "overrides": snr["overrides"]}
    assert league_mechanism.window_signal(gone) == "momentum_snr"
    assert league_mechanism.window_signal({"config": str(tmp_path / "gone.yaml")}) == "grad_norm"


def test_cell_status_knows_divergence_under_torchrun():
    stopped = "error: [rank 1] 20 consecutive non-finite steps up to iteration 60 (...)"
    assert league_runs.cell_status(0, "") == "ok"
    assert league_runs.cell_status(3, "") == "diverged"  # one process: the documented exit code
    assert league_runs.cell_status(1, f"...\n{stopped}\nChildFailedError") == "diverged"  # torchrun
    assert league_runs.cell_status(1, "Traceback ... KeyError") is None  # a real failure stops


def test_pretrained_cells_start_from_the_cached_source_model():
    args = _args("--init", "scratch", "pretrained", "--epochs", "9")
    cells = league_cells.league_cells(
        ["deepforest_trees_ft"], ["multistep"], [0], ("scratch", "pretrained")
    )
    assert [c.key for c in cells] == [
        "deepforest_trees_ft/multistep_s0",
        "deepforest_trees_ft+pretrained/multistep_s0",
    ]
    scratch, tuned = (league_cells.cell_spec(args, c) for c in cells)
    source = league_cells.source_spec(args)
    assert source["config"] == "configs/league/source/faster_rcnn_r18_multistep.yaml"
    weights = f"{source['run_dir']}/best.pth"
    assert weights.startswith("runs/pretrained/faster_rcnn_r18-")
    assert tuned["overrides"] == [*scratch["overrides"], f"model.weights={weights}"]
    assert "schedule.milestones=[6, 8]" in scratch["overrides"]  # 24, 32 of 36 -> 2/3, 8/9
    assert tuned["run_dir"] == "runs/x/deepforest_trees_ft+pretrained/multistep_s0"
    command = league.reproduce_command(args)
    assert command.endswith("--out runs/x --init scratch pretrained")


def test_another_source_folder_makes_its_own_group_beside_the_first():
    args = _args("--init", "pretrained", "--source-configs", "configs/league/source_natural")
    label = league.source_label(args)
    assert label == "source_natural" and league.source_label(_args()) == ""
    absolute = _args("--source-configs", str(ROOT / "configs/league/source"))
    assert league.source_label(absolute) == ""  # the default folder, however it is spelled
    cells = league_cells.league_cells(
        ["deepforest_trees_ft"], ["multistep"], [0], ("scratch", "pretrained"), label
    )
    assert [c.key for c in cells] == [
        "deepforest_trees_ft/multistep_s0",
        "deepforest_trees_ft+pretrained-source_natural/multistep_s0",
    ]
    natural = league_cells.cell_spec(args, cells[1])
    shapes = league_cells.cell_spec(
        _args("--init", "pretrained"),
        league_cells.Cell("deepforest_trees_ft", "multistep", 0, "pretrained"),
    )
    assert natural["overrides"][-1] != shapes["overrides"][-1]  # another source checkpoint
    assert natural["overrides"][-1].startswith("model.weights=runs/pretrained/faster_rcnn_r18-")
    record = {"dataset": "trees", "variant": "multistep", "seed": 0, "init": "pretrained"}
    assert league_cells.cell_group({**record, "source": "source_natural"}) == (
        "trees+pretrained-source_natural"
    )
    assert league_cells.cell_group(record) == "trees+pretrained"
    # Both starts are tabled against the one from-scratch baseline.
    cells = _finetune_cells()
    for key in [k for k in cells if "+pretrained" in k]:
        other = dict(cells[key], source="source_natural")
        cells[key.replace("+pretrained", "+pretrained-source_natural")] = other
    groups = ["trees", "trees+pretrained", "trees+pretrained-source_natural"]
    text = league_tables.render_markdown(league_tables.summarize(cells, groups, ["multistep"]))
    assert "| trees+pretrained | multistep | 0.3500" in text
    assert "| trees+pretrained-source_natural | multistep | 0.3500" in text


@pytest.mark.parametrize(
    "variant, expected",
    [
        ("zenith", {"name": "zenith", "lr": 0.02, "window": 100, "warmup_history": "exclude"}),
        ("zenith_adamw", {"name": "zenith_adamw", "lr": 0.0001, "weight_decay": 0.05}),
        ("adamw_cosine", {"name": "adamw", "lr": 0.0001, "norm_weight_decay": 0.0}),
        ("zenith_lr_half", {"name": "zenith", "lr": 0.01}),
        ("zenith_warmup_include", {"warmup_history": "include"}),
        ("zenith_w_epoch", {"window": "epoch"}),
    ],
)
def test_finetune_variants_resolve_on_the_target_configs(variant, expected):
    spec = league_cells.cell_spec(
        _args("--model", "mask_rcnn_r18"),
        league_cells.Cell("shapes_target", variant, 0, "pretrained"),
    )
    cfg = load_config(ROOT / spec["config"], spec["overrides"])
    assert {k: getattr(cfg.optimizer, k) for k in expected} == expected
    assert cfg.model.weights.startswith("runs/pretrained/mask_rcnn_r18-")
    if variant == "adamw_cosine":
        assert cfg.schedule.name == "cosine"
    assert set(league_variants.FINETUNE_VARIANTS) | set(league_variants.FINETUNE_ABLATIONS) <= set(
        league_variants.VARIANTS
    )


def test_fine_tuning_probes_change_only_the_lr_or_the_trainable_stages():
    args = _args("--epochs", "12")
    cell = league_cells.Cell("deepforest_trees_ft", "multistep_lr_half", 0, "pretrained")
    half = league_cells.cell_spec(args, cell)
    cfg = load_config(ROOT / half["config"], half["overrides"])
    assert (cfg.optimizer.lr, cfg.schedule.milestones) == (0.01, [8, 11])  # 24, 32 of 36
    assert cfg.model.trainable_backbone_layers is None  # torchvision's 3 for a pretrained start
    cell = league_cells.Cell("deepforest_trees_ft", "multistep_all_stages", 0, "pretrained")
    every = league_cells.cell_spec(args, cell)
    cfg = load_config(ROOT / every["config"], every["overrides"])
    assert (cfg.optimizer.lr, cfg.model.trainable_backbone_layers) == (0.02, 5)
    assert cfg.model.weights.startswith("runs/pretrained/faster_rcnn_r18-")


def _finetune_cells() -> dict:
    cells = {}
    for init, aps in (("scratch", [0.10, 0.20, 0.30]), ("pretrained", [0.25, 0.34, 0.345])):
        for seed in (0, 1):
            cell = _cell("trees", "multistep", seed, [ap + 0.01 * seed for ap in aps])
            if init == "pretrained":
                cell["init"] = init
                cell["overrides"] = ["train.seed=0", "model.weights=runs/pretrained/f-abc/best.pth"]
            cells[league_cells.Cell("trees", "multistep", seed, init).key] = cell
    return cells


def test_finetune_tables_say_where_it_started_whether_it_plateaued_and_paid():
    summary = league_tables.summarize(
        _finetune_cells(), ["trees", "trees+pretrained"], ["multistep"]
    )
    assert summary["trees"]["rows"]["multistep"]["final_AP"][0] == pytest.approx(0.305)
    assert "starts" not in summary["trees"]
    assert summary["trees+pretrained"]["starts"] == ["runs/pretrained/f-abc/best.pth"]
    text = league_tables.render_markdown(summary)
    assert "## trees+pretrained (95% target AP 0.3325)" in text
    assert "Fine-tuned from `runs/pretrained/f-abc/best.pth`." in text
    # evaluations at 10, 20, 30: 75% is 22.5, so the gain is 0.35 - 0.345 ... from 20 to 30
    assert "last quarter of its 30 iterations: +0.0050 AP (plateaued)" in text
    assert (
        "| trees+pretrained | multistep | 0.3500 ± 0.0071 (2) | 0.3050 ± 0.0071 (2) | +0.0450 "
        "| yes (< 3 seeds) |" in text
    )
    cells = _finetune_cells()
    third = league_cells.Cell("trees", "multistep", 2, "scratch")
    cells[third.key] = _cell("trees", "multistep", 2, [0.10, 0.20, 0.32])  # scratch: 0.31 mean
    for seed in (0, 1, 2):
        probe = _cell("trees", "multistep_lr_half", seed, [0.1, 0.2, 0.25])
        probe["init"] = "pretrained"
        cells[league_cells.Cell("trees", "multistep_lr_half", seed, "pretrained").key] = probe
    groups, variants = ["trees", "trees+pretrained"], ["multistep", "multistep_lr_half"]
    text = league_tables.render_markdown(league_tables.summarize(cells, groups, variants))
    assert "| trees+pretrained | multistep_lr_half | 0.2500 ± 0.0000 (3) " in text
    assert "| 0.3100 ± 0.0100 (3) | -0.0600 | no |" in text
    only_scratch = league_tables.summarize(_finetune_cells(), ["trees"], ["multistep"])
    assert "Does the pretrained start pay?" not in league_tables.render_markdown(only_scratch)


@pytest.mark.slow
def test_tiny_finetuning_league_pretrains_once_then_trains_nothing(tmp_path):
    data = make_tiny_dataset(tmp_path / "data")
    sources, configs = tmp_path / "source", tmp_path / "configs" / "tiny"
    sources.mkdir()
    configs.mkdir(parents=True)
    sgd = {"name": "sgd", "lr": 0.01}
    write_config(
        tiny_config(data, tmp_path / "unused", optimizer=sgd),
        sources / "faster_rcnn_r18_multistep.yaml",
    )
    # Another class count than the source: the box predictor is re-initialised.
    # Warm-up norms in the window: the 2 tiny iterations are all warm-up.
    target = tiny_config(
        data, tmp_path / "unused", model={"num_classes": 7}, optimizer={"warmup_history": "include"}
    )
    write_config(target, configs / "faster_rcnn_r18_zenith.yaml")
    out, cache = tmp_path / "out", tmp_path / "cache"
    cmd = [sys.executable, "benchmarks/league.py", "--configs", str(tmp_path / "configs")]
    cmd += ["--datasets", "tiny", "--variants", "zenith", "--seeds", "0", "--epochs", "1"]
    cmd += ["--nproc", "1", "--out", str(out), "--init", "pretrained"]
    cmd += ["--source-configs", str(sources), "--pretrained-cache", str(cache)]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    [run] = [p for p in cache.iterdir() if p.name.startswith("faster_rcnn_r18-")]
    record = json.loads((run / "pretrain.json").read_text())
    assert record["weights"] == str(run / "best.pth") and (run / "best.pth").is_file()
    assert record["iterations"] == 2 and "plateaued" in record
    assert record["machine"] == league_runs.machine()
    # A source folder of its own (not configs/league/source): its start is named after it.
    group = "tiny+pretrained-source"
    cell = json.loads((out / "results.json").read_text())["cells"][f"{group}/zenith_s0"]
    assert cell["init"] == "pretrained" and cell["overrides"][-1] == f"model.weights={run}/best.pth"
    assert cell["source"] == "source"
    log = (out / "logs" / f"{group}_zenith_s0.log").read_text()
    assert "re-initialised 4 tensors" in log
    assert f"Fine-tuned from `{run}/best.pth`." in (out / "league.md").read_text()
    # Run again: nothing trains, neither the source model nor the cell.
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 of 1 cells done, 0 to run" in second.stdout and "training" not in second.stdout
    again = [
        sys.executable,
        "benchmarks/pretrain.py",
        "--models",
        "faster_rcnn_r18",
        "--nproc",
        "1",
    ]
    again += ["--configs", str(sources), "--cache", str(cache)]
    cached = subprocess.run(again, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert cached.returncode == 0 and "cached, nothing to train" in cached.stdout, cached.stderr
    assert len(list((cache / "logs").iterdir())) == 1  # one pretraining, ever
    # Item 5's report reads the finished ZENITH cell from results.json alone: its window, and the
    # raw norm and loss terms of terms_curve, as in a later session whose runs/ is gone.
    assert set(cell["terms_curve"]) >= {"grad_norm", "loss_classifier", "loss_objectness"}
    assert set(cell["terms_curve"]) >= {"rpn_positives", "roi_positives"}
    shutil.rmtree(ROOT / cell["run_dir"])
    mechanism = [sys.executable, "benchmarks/league_mechanism.py", "--leagues", str(out)]
    report = subprocess.run(mechanism, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stdout + report.stderr
    text = (out / "mechanism.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| tiny+pretrained"))
    assert row.startswith(f"| {group} (faster_rcnn_r18, 1 ep.) zenith | 1 |")
    assert not row.endswith("| – |")  # the raw norm
    assert "loss_classifier" in text and "roi_positives" in text
    assert (out / "mechanism.png").read_bytes().startswith(b"\x89PNG")
