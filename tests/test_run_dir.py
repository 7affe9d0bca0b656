"""The output-directory guard: which directories hold a run, what may be written, --overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest

from zenith_det.errors import SetupError
from zenith_det.run_dir import (
    check_writable_dir,
    move_aside,
    output_dir_problem,
    overwriting,
    run_files,
)


def _old_run(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True)
    files = {"config.yaml": b"a: 1\n", "metrics.jsonl": b"{}\n", "last.pth": b"\x00\x01"}
    for name, data in files.items():
        (path / name).write_bytes(data)
    return files


def _contents(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir()}


def test_run_files_are_the_run_outputs_only(tmp_path):
    assert run_files(tmp_path / "missing") == []
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / ".last.pth.tmp.12").write_text("a killed write")
    assert run_files(tmp_path) == []  # a folder the user made, or a temp: not a run
    for name in ("summary.json", "best.pth", "model_e0001_i000000.pth"):
        (tmp_path / name).write_text("x")
    assert run_files(tmp_path) == ["best.pth", "model_e0001_i000000.pth", "summary.json"]


def test_a_directory_holding_a_run_needs_resume(tmp_path):
    run = tmp_path / "run"
    assert output_dir_problem(run, resume=None) is None  # a new directory
    _old_run(run)
    problem = output_dir_problem(run, resume=None)
    assert problem.startswith(f"output_dir {run} already holds a run (config.yaml, last.pth, ")
    assert "--resume" in problem and "--overwrite" in problem
    assert output_dir_problem(run, resume=True) is None
    assert output_dir_problem(run, resume="elsewhere/last.pth") is None


@pytest.mark.parametrize("where", ["itself", "parent", "grandparent"])
def test_a_path_under_a_file_is_refused(tmp_path, where):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    path = {"itself": blocker, "parent": blocker / "run", "grandparent": blocker / "a" / "run"}
    with pytest.raises(SetupError, match="is a file, not a directory") as info:
        check_writable_dir(path[where], "output_dir")
    assert str(path[where]) in str(info.value)
    assert output_dir_problem(path[where], resume=True) == str(info.value)


def test_move_aside_keeps_every_byte_and_never_collides(tmp_path):
    run = tmp_path / "run"
    assert move_aside(run) is None
    files = _old_run(run)
    first = move_aside(run)
    assert not run.exists() and first.name.startswith("run.old-")
    assert _contents(first) == files
    _old_run(run)
    second = move_aside(run)  # same second: a suffix keeps both
    assert second != first and _contents(second) == files


def test_overwriting_puts_the_old_run_back_when_the_new_one_wrote_nothing(tmp_path, capfd):
    run = tmp_path / "run"
    files = _old_run(run)
    with pytest.raises(SetupError), overwriting(run, enabled=True) as moved:
        assert not run.exists() and _contents(moved) == files
        raise SetupError("a start-up check failed")
    assert _contents(run) == files and not list(tmp_path.glob("run.old-*"))
    assert "moved" in capfd.readouterr().err
    with overwriting(run, enabled=True) as moved:
        run.mkdir()
        (run / "config.yaml").write_text("new")
    assert _contents(moved) == files and (run / "config.yaml").read_text() == "new"


def test_overwriting_moves_nothing_without_the_flag_or_on_other_ranks(tmp_path, monkeypatch):
    run = tmp_path / "run"
    files = _old_run(run)
    with overwriting(run, enabled=False) as moved:
        assert moved is None and _contents(run) == files
    monkeypatch.setenv("RANK", "1")
    with overwriting(run, enabled=True) as moved:
        assert moved is None and _contents(run) == files
