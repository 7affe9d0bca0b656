"""ZENITH against the tuned multistep-SGD baseline on the demo: the league's first two rows.

    python benchmarks/time_to_accuracy.py --seeds 0 1 2 --nproc 2

Kept as a short name for `python benchmarks/league.py --datasets demo --variants zenith
multistep --out runs/bench_tta`; every other league option (`--variants`, `--epochs`, `--set`...)
is passed through and wins over these defaults. See benchmarks/league.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from league import main as league_main  # noqa: E402

DEFAULTS = ["--datasets", "demo", "--variants", "zenith", "multistep", "--out", "runs/bench_tta"]


def main(argv: list[str] | None = None) -> int:
    """Entry point: the league with this benchmark's defaults, then the caller's arguments."""
    return league_main([*DEFAULTS, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
