"""The league's tables: seeds aggregated per variant, and league.md.

Per group (a dataset, from scratch or fine-tuned): mean ± sample standard deviation over seeds
of the final and best AP and of the wall time, the mean AP after each evaluation, the iterations
to reach 95% of the multistep baseline's mean final AP, the step size applied at each evaluation
and, for ZENITH runs, its gradient-norm window. Fine-tuning groups add what their starts are
judged by: whether multistep plateaued, and whether the pretrained start beat the one from
scratch at the same budget. A group whose cells recorded their machine says which ran where.
Last, "When ZENITH pays off": per group, the ZENITH rows against multistep and the best
optimizer that needs no schedule (the README's tables of that name).
"""

from __future__ import annotations

import statistics
from collections import Counter

from league_cells import cell_group
from league_variants import AUTOMATIC_ROWS, BASELINE, FINETUNE_PROBES, ZENITH_ROWS
from pretrain import plateau

TARGET_FRACTION = 0.95  # of the multistep baseline's mean final AP


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


def summarize(cells: dict, groups: list[str], variants: list[str]) -> dict:
    """{group: {"target": AP or None, "rows": {variant: summary}}} over the finished cells.

    A group is a dataset (from scratch) or `<dataset>+pretrained` (fine-tuned): `Cell.group`;
    a group without any finished cell is left out.
    """
    out = {}
    for group in groups:
        in_group = {k: c for k, c in cells.items() if cell_group(c) == group}
        mine = list(in_group.values())
        if not mine:
            continue  # none of its cells has run yet (e.g. fine-tuning before its source)
        target = baseline_target(mine)
        rows = {}
        for variant in variants:
            runs = [c for c in mine if c["variant"] == variant]
            if runs:
                rows[variant] = summarize_variant(runs, target)
        out[group] = {"target": target, "rows": rows}
        starts = sorted({_weights(c) for c in mine} - {None})
        if starts:
            out[group]["starts"] = starts
        reused = {k: c["reused_from"] for k, c in in_group.items() if "reused_from" in c}
        if reused:
            out[group]["reused"] = dict(sorted(reused.items()))
        machines = Counter(c.get("machine", UNRECORDED) for c in mine)
        if set(machines) != {UNRECORDED}:
            out[group]["machines"] = dict(sorted(machines.items()))
    return out


def _weights(cell: dict) -> str | None:
    # The model.weights a fine-tuning cell started from (the last override wins).
    found = [
        o.split("=", 1)[1] for o in cell.get("overrides", []) if o.startswith("model.weights=")
    ]
    return found[-1] if found else None


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
        lines += start_lines(part)
        lines += reused_lines(part)
        lines += machine_lines(part)
        lines += lr_table(part["rows"])
        lines += norm_table(part["rows"])
    lines += pays_table(summary)
    lines += verdict_table(summary)
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def start_lines(part: dict) -> list[str]:
    """A fine-tuning group: where it started, and whether its multistep baseline plateaued."""
    if "starts" not in part:
        return []
    lines = ["", "Fine-tuned from " + ", ".join(f"`{w}`" for w in part["starts"]) + "."]
    base = part["rows"].get(BASELINE)
    if base and base.get("curve_mean"):
        points = [[0, s, ap] for s, ap in zip(base["curve_steps"], base["curve_mean"], strict=True)]
        found = plateau(points)
        gain = found["last_quarter_gain"]
        verdict = "plateaued" if found["plateaued"] else "not plateaued (gain >= 0.01)"
        text = "n/a" if gain is None else f"{gain:+.4f} AP ({verdict})"
        lines.append(
            f"Multistep over the last quarter of its {base['curve_steps'][-1]} iterations: {text}."
        )
    return lines


def reused_lines(part: dict) -> list[str]:
    """The group's cells copied from another league (`--reuse`), each with where it came from."""
    if "reused" not in part:
        return []
    copied = "; ".join(f"`{key}` from `{origin}`" for key, origin in part["reused"].items())
    return ["", f"Copied, not trained here (launched alike: config, overrides, ranks): {copied}."]


UNRECORDED = "not recorded"  # cells run before results.json kept the machine


def machine_lines(part: dict) -> list[str]:
    """Which machines the group's cells ran on, once any of its cells recorded one."""
    if "machines" not in part:
        return []
    ran = "; ".join(
        f"{name} ({count} cell{'' if count == 1 else 's'})"
        for name, count in part["machines"].items()
    )
    return ["", f"Ran on: {ran}. Wall seconds compare only within one machine."]


PAYS_SEEDS = 3  # issue 17: a start counts as pretrained only if it pays over 3 seeds


def pays_table(summary: dict) -> list[str]:
    """Fine-tuned multistep (and its FINETUNE_PROBES) against from-scratch multistep."""
    pairs = [
        (group, group.split("+")[0])
        for group in summary
        if "+pretrained" in group and group.split("+")[0] in summary
    ]
    rows = []
    for tuned, scratch in pairs:
        b = summary[scratch]["rows"].get(BASELINE)
        if not (b and b["seeds"]):
            continue
        for variant, a in summary[tuned]["rows"].items():
            if not (variant in (BASELINE, *FINETUNE_PROBES) and a["seeds"]):
                continue
            gain = a["final_AP"][0] - b["final_AP"][0]
            verdict = "yes" if gain > 0 else "no"
            if min(a["seeds"], b["seeds"]) < PAYS_SEEDS:
                verdict += f" (< {PAYS_SEEDS} seeds)"
            rows.append(
                f"| {tuned} | {variant} | {_pm(a['final_AP'], 4)} ({a['seeds']}) "
                f"| {_pm(b['final_AP'], 4)} ({b['seeds']}) | {gain:+.4f} | {verdict} |"
            )
    if not rows:
        return []
    lines = ["", "## Does the pretrained start pay?", ""]
    lines.append(
        "Final AP (seeds) of multistep, and of its fine-tuning probes, fine-tuned against "
        f"multistep from scratch at the same budget; it pays with a gain over {PAYS_SEEDS} seeds."
    )
    lines += [
        "",
        "| start | fine-tuned variant | fine-tuned | from scratch | difference | pays |",
        "|---|---|---|---|---|---|",
    ]
    return lines + rows


def verdict_rows(rows: dict) -> list[str]:
    """The variants a group's verdict compares: ZENITH's, multistep, the best automatic one."""
    automatic = [v for v in AUTOMATIC_ROWS if v in rows and rows[v]["seeds"]]
    best = [max(automatic, key=lambda v: rows[v]["final_AP"][0])] if automatic else []
    return [v for v in ZENITH_ROWS if v in rows] + [BASELINE] + best


def verdict_table(summary: dict) -> list[str]:
    """'When ZENITH pays off': per group, ZENITH's rows against multistep and the best automatic."""
    lines = []
    for group, part in summary.items():
        rows = part["rows"]
        base = rows.get(BASELINE)
        if not (base and base["seeds"] and any(v in rows for v in ZENITH_ROWS)):
            continue
        for variant in verdict_rows(rows):
            row = rows[variant]
            if not row["seeds"]:
                lines.append(f"| {group} | {variant} | 0 (+{row['diverged']} diverged) | | | | | |")
                continue
            gain = row["final_AP"][0] - base["final_AP"][0]
            lines.append(
                f"| {group} | {variant} | {row['seeds']} | {_pm(row['final_AP'], 4)} "
                f"| {_pm(row['best_AP'], 4)} | {_reach_text(row, part['target'])} "
                f"| {_pm(row['seconds'], 0)} | {gain:+.4f} |"
            )
    if not lines:
        return []
    head = [
        "",
        "## When ZENITH pays off",
        "",
        "Per group: the ZENITH rows, the tuned multistep schedule, and the best (by mean final "
        "AP) of the optimizers that need neither milestones nor a decay schedule ("
        + ", ".join(AUTOMATIC_ROWS)
        + "). *vs multistep*: the difference of mean final AP.",
        "",
        "| group | variant | seeds | final AP | best AP | it. to 95% of multistep | wall s "
        "| vs multistep |",
        "|---|---|---|---|---|---|---|---|",
    ]
    return head + lines
