"""A new user's mistakes, made for real with every tool: one `error:` line, exit 2, no traceback,
and a finished run's files byte-identical afterwards.

One tiny run of the demo config (ZENITH, 2 iterations at 64-80 px on 8 images) is trained once
and then abused: started again without --resume, resumed with another optimizer, window,
batch, model or device, evaluated with a bad checkpoint, plotted into a file...
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training_setup import make_tiny_dataset
from zenith_det.checkpoint import load_checkpoint
from zenith_det.config import config_from_dict, load_config
from zenith_det.resume_check import resume_mismatches

ROOT = Path(__file__).resolve().parents[1]
ZENITH = "configs/demo/faster_rcnn_r18_zenith.yaml"
MULTISTEP = "configs/demo/faster_rcnn_r18_multistep.yaml"
TINY = (
    "train.epochs=1",
    "train.max_iters_per_epoch=2",
    "model.min_size=64",
    "model.max_size=80",
    "train.images_per_gpu=2",
)
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def tool(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run tools/<name>.py in a subprocess from the checkout, output captured."""
    environment = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    cmd = [sys.executable, str(ROOT / "tools" / f"{name}.py"), *args]
    return subprocess.run(
        cmd, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300
    )


def overrides(*pairs: str) -> list[str]:
    """`--set` arguments for each `key=value`."""
    return [arg for pair in pairs for arg in ("--set", pair)]


def assert_one_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2 with exactly one `error:` line holding every fragment, and no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory`, by relative path, with its bytes."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """8 train and 4 val images of the demo data, generated once."""
    return make_tiny_dataset(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def finished(data_root, tmp_path_factory) -> dict:
    """A finished ZENITH run of the demo config, its train arguments and its files' bytes."""
    run = tmp_path_factory.mktemp("finished") / "run"
    args = ["--output-dir", str(run), *overrides(f"data.root={data_root}", *TINY)]
    result = tool("train", "--config", ZENITH, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"run": run, "args": args, "files": snapshot(run)}


@pytest.fixture
def untouched(finished):
    """The finished run; after the test, its files must be exactly as they were."""
    yield finished
    assert snapshot(finished["run"]) == finished["files"]
    assert not list(finished["run"].parent.glob("run.old-*"))


# --- tools/train.py ---------------------------------------------------------------------------

TRAIN_MISTAKES = {
    "start again without a flag": (
        [],
        ["already holds a run", "continue it with --resume", "start over with --overwrite"],
    ),
    "resume and overwrite": (["--resume", "--overwrite"], ["give one of them"]),
    "resume with another optimizer": (
        ["--resume", "--config", MULTISTEP],
        ["cannot resume", "optimizer.name: checkpoint zenith, this run sgd"],
    ),
    "resume with another window and batch": (
        ["--resume", *overrides("optimizer.window=5", "train.images_per_gpu=1")],
        ["optimizer.window: checkpoint 20, this run 5", "train.images_per_gpu: checkpoint 2, this"],
    ),
    "overwrite, then a failing check": (
        ["--overwrite", *overrides("model.num_classes=3")],
        ["num_classes must be at least 6"],
    ),
    "cuda without CUDA": (
        ["--resume", *overrides("train.device=cuda")],
        ["train.device is 'cuda' but torch sees no CUDA device"],
    ),
}


@pytest.mark.parametrize(
    "case",
    [pytest.param(name, marks=NO_CUDA) if "CUDA" in name else name for name in TRAIN_MISTAKES],
)
def test_train_mistakes_are_one_line_and_leave_the_run_untouched(case, untouched):
    extra, fragments = TRAIN_MISTAKES[case]
    config = [] if "--config" in extra else ["--config", ZENITH]
    result = tool("train", *config, *untouched["args"], *extra)
    assert_one_error(result, *fragments)
    if case == "resume with another optimizer":  # start-up warnings still come first
        assert "schedule.milestones: 6, 7 are at or beyond train.epochs (1)" in result.stderr


def test_an_output_dir_under_a_file_is_one_line(untouched):
    inside = untouched["run"] / "config.yaml" / "run"
    args = [*untouched["args"], "--output-dir", str(inside)]
    assert_one_error(tool("train", "--config", ZENITH, *args), f"{inside} cannot be created")


def test_resume_without_a_checkpoint_is_one_line(data_root, tmp_path):
    args = ["--output-dir", str(tmp_path / "new"), *overrides(f"data.root={data_root}", *TINY)]
    result = tool("train", "--config", ZENITH, *args, "--resume")
    assert_one_error(result, f"--resume: no last.pth in {tmp_path / 'new'}")
    assert not (tmp_path / "new").exists()


def test_another_world_size_or_trained_parameter_set_is_refused(finished):
    """The rules behind a torchrun resume with other ranks, or with model.weights newly set
    (frozen stages: fewer trained parameters), on the real checkpoint's state."""
    state = load_checkpoint(finished["run"] / "last.pth")
    saved = config_from_dict(state["config"])
    cfg = load_config(finished["run"] / "config.yaml")
    sizes = [len(group["params"]) for group in state["optimizer"]["param_groups"]]
    assert resume_mismatches(saved, state, cfg, world_size=1, group_sizes=sizes) == []
    assert resume_mismatches(saved, state, cfg, world_size=2) == [
        "world size (ranks): checkpoint 1, this run 2"
    ]
    (problem,) = resume_mismatches(saved, state, cfg, 1, [size // 2 for size in sizes])
    assert problem.startswith("trained parameters per optimizer group (model.weights, ")
    assert problem.endswith(f"checkpoint {sizes}, this run {[size // 2 for size in sizes]}")


def test_overwrite_moves_the_old_run_aside_and_starts_over(finished, data_root, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name, data in finished["files"].items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    args = ["--output-dir", str(run), *overrides(f"data.root={data_root}", *TINY)]
    result = tool("train", "--config", MULTISTEP, *args, "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    (old,) = tmp_path.glob("run.old-*")
    assert snapshot(old) == finished["files"]
    assert "name: sgd" in (run / "config.yaml").read_text()
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "schedule.milestones: 6, 7" in warnings[0], warnings


def test_an_empty_val_set_is_warned_about_at_start_up(data_root, tmp_path):
    val = json.loads((data_root / "annotations" / "instances_val.json").read_text())
    empty = tmp_path / "empty_val.json"
    empty.write_text(json.dumps({**val, "images": [], "annotations": []}))
    sets = [f"data.root={data_root}", "data.demo=false", f"data.val_annotations={empty}", *TINY]
    args = ["--output-dir", str(tmp_path / "run"), *overrides(*sets)]
    result = tool("train", "--config", ZENITH, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    (warning,) = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert f"the val set ({empty}) has no images" in warning and "AP -1" in warning


# --- tools/eval.py, model mode ----------------------------------------------------------------


def _eval_mistakes(run: Path, tmp_path: Path) -> dict[str, tuple[list[str], list[str]]]:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file")
    best = str(run / "best.pth")
    return {
        "corrupt checkpoint": ([str(garbage)], [f"{garbage}: cannot read checkpoint"]),
        "missing data": (
            [best, *overrides("data.demo=false", f"data.root={tmp_path / 'nowhere'}")],
            ["data.val_images", "nowhere"],
        ),
        "bad config": ([best, *overrides("model.fpn_channel=64")], ["model.fpn_channel"]),
        "output dir under a file": (
            [best, "--output-dir", str(blocker / "eval")],
            [f"{blocker} is a file"],
        ),
    }


EVAL_MISTAKES = [
    "corrupt checkpoint",
    "missing data",
    "bad config",
    "output dir under a file",
]


@pytest.mark.parametrize("case", EVAL_MISTAKES)
def test_eval_model_mode_mistakes_are_one_line(case, untouched, tmp_path):
    run = untouched["run"]
    extra, fragments = _eval_mistakes(run, tmp_path)[case]
    checkpoint, *rest = extra
    config = ["--config", str(run / "config.yaml"), "--checkpoint", checkpoint]
    assert_one_error(tool("eval", *config, *rest), *fragments)


@NO_CUDA
def test_eval_on_cuda_without_cuda_is_one_line(untouched):
    run = untouched["run"]
    args = ["--config", str(run / "config.yaml"), "--checkpoint", str(run / "best.pth")]
    result = tool("eval", *args, *overrides("train.device=cuda"))
    assert_one_error(result, "train.device is 'cuda' but torch sees no CUDA device")


def _sys_path_insert_line(tree: ast.Module) -> int | None:
    for node in tree.body:
        if "sys.path.insert" in ast.unparse(node):
            return node.lineno
    return None


@pytest.mark.parametrize("name", ["train", "eval", "plot", "demo"])
def test_every_tool_runs_from_an_uninstalled_checkout(name):
    # Uninstalled, `zenith_det` is importable only once the tool put the checkout on sys.path.
    tree = ast.parse((ROOT / "tools" / f"{name}.py").read_text())
    first = min(
        node.lineno
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("zenith_det")
    )
    inserted = _sys_path_insert_line(tree)
    assert inserted is not None and inserted < first


# --- tools/plot.py and tools/demo.py ----------------------------------------------------------


def test_plot_mistakes_are_one_line(untouched, tmp_path):
    run = untouched["run"]
    missing = tmp_path / "no_such_run"
    assert_one_error(tool("plot", str(missing)), f"{missing}: not found")
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file")
    result = tool("plot", str(run), "--out", str(blocker / "plot.png"))
    assert_one_error(result, f"{blocker} is a file")
    torn = tmp_path / "metrics.jsonl"
    torn.write_text('{"type": "train", "step": 1}\n[1, 2]\n')
    assert_one_error(tool("plot", str(torn)), f"{torn}: record 1 is not a metrics record")


def test_plot_without_matplotlib_names_the_install(untouched, tmp_path):
    # A matplotlib that fails to import, first on the path: what an install without it meets.
    fake = tmp_path / "site" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    result = tool("plot", str(untouched["run"]), env={"PYTHONPATH": str(fake.parent)})
    assert_one_error(result, "plotting needs matplotlib: pip install -e '.[plot]'")


def test_plot_draws_a_finished_run(untouched, tmp_path):
    out = tmp_path / "new" / "plot.png"
    result = tool("plot", str(untouched["run"]), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 10_000


def test_demo_mistakes_are_one_line_before_anything_runs(finished, tmp_path):
    out = tmp_path / "runs"
    (out / "faster_rcnn_r18_zenith").mkdir(parents=True)
    (out / "faster_rcnn_r18_zenith" / "last.pth").write_bytes(b"an old run")
    data = ["--out", str(out), "--data-root", str(tmp_path / "data")]
    result = tool("demo", *data)
    assert_one_error(result, "faster_rcnn_r18_zenith already holds a run", "--overwrite")
    assert_one_error(tool("demo", *data, "--overwrite", "--nproc", "0"), "--nproc must be")
    result = tool("demo", *data, "--overwrite", *overrides("train.epochs=zero"))
    assert_one_error(result, "train.epochs")
    assert not (tmp_path / "data").exists()  # stopped before generating anything
    assert (out / "faster_rcnn_r18_zenith" / "last.pth").read_bytes() == b"an old run"
