"""The league's entries: each is one of a dataset's two configs plus `--set` overrides.

A dataset folder `configs/league/<dataset>/` holds `<model>_zenith.yaml` and
`<model>_multistep.yaml` (the dataset's tuned multistep baseline); a variant is one of these two
plus overrides, the same for every dataset. Which variant means what is fixed here, so that
results.json keeps meaning what it measured.
"""

from __future__ import annotations

from dataclasses import dataclass

BASELINE = "multistep"
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
# AdamW as configs/demo/_zenith_adamw_.yaml ships it: the usual R-CNN fine-tuning LR, weight
# decay 0.05 and none on normalisation layers. The Adam-style pair: zenith_adamw, adamw_cosine.
ADAMW = (
    "optimizer.lr=0.0001",
    "optimizer.betas=[0.9, 0.999]",
    "optimizer.weight_decay=0.05",
    "optimizer.norm_weight_decay=0.0",
)

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
    # Added for the fine-tuning regime (issue 17); kept last so the older ones keep their colours.
    "zenith_adamw": Variant(
        "zenith",
        ("optimizer.name=zenith_adamw", *ADAMW, "optimizer.warmup_history=exclude"),
        about="ZENITH's rule driving AdamW, eta_0 1e-4, as configs/demo ships it",
    ),
    "adamw_cosine": Variant(
        "multistep",
        ("optimizer.name=adamw", *ADAMW, "schedule.name=cosine"),
        about="AdamW, lr 1e-4, cosine decay (the Adam-style baseline of zenith_adamw)",
    ),
    "zenith_lr_half": Variant("zenith", lr_scale=0.5, about="ZENITH, eta_0 x0.5"),
    "zenith_warmup_include": Variant(
        "zenith", ("optimizer.warmup_history=include",), about="ZENITH, warm-up norms included"
    ),
    "zenith_snr": Variant(
        "zenith",
        ("optimizer.signal=momentum_snr",),
        about="ZENITH's machinery on the momentum buffer's signal-to-noise ratio (an option)",
    ),
    # From scratch the zenith base is the spec's (warm-up norms included); this is zenith_snr
    # beside the shipped recipe there. In the fine-tuning regime it repeats zenith_snr.
    "zenith_snr_exclude": Variant(
        "zenith",
        ("optimizer.warmup_history=exclude", "optimizer.signal=momentum_snr"),
        about="zenith_snr with warm-up norms excluded (the shipped handling)",
    ),
    # Probes of why a pretrained start does not pay on the tree crowns (issue 17): a gentler
    # fine-tuning LR, and every backbone stage trainable (BatchNorm stays frozen either way).
    # From scratch the second is multistep itself: all stages train there already.
    "multistep_lr_half": Variant("multistep", lr_scale=0.5, about="SGD multistep, LR x0.5"),
    "multistep_all_stages": Variant(
        "multistep",
        ("model.trainable_backbone_layers=5",),
        about="SGD multistep, all 5 backbone stages trainable",
    ),
}

# The multistep variants that ask why a start does or does not pay; league.md's "Does the
# pretrained start pay?" tables them beside multistep itself.
FINETUNE_PROBES = ("multistep_lr_half", "multistep_all_stages")

# The rows of league.md's "When ZENITH pays off": every ZENITH main row, and the optimizers that
# need neither milestones nor a decay schedule, of which the table shows the best.
ZENITH_ROWS = ("zenith", "zenith_warmup_exclude", "zenith_adamw")
AUTOMATIC_ROWS = ("dadapt_sgd", "prodigy", "schedulefree_sgd")

# The from-scratch league's main rows (the default of --variants).
MAIN_VARIANTS = [
    "zenith",
    "multistep",
    "cosine",
    "constant",
    "dadapt_sgd",
    "prodigy",
    "schedulefree_sgd",
]
# The fine-tuning regime (issue 17): main rows with 3 seeds, then the ZENITH ablations with 1.
# Its zenith base is the shipped recipe (W = 100, warm-up norms excluded), so zenith_w100 and
# zenith_warmup_exclude would repeat it and are not listed.
FINETUNE_VARIANTS = [
    "zenith",
    "multistep",
    "constant",
    "cosine",
    "prodigy",
    "schedulefree_sgd",
    "zenith_adamw",
    "adamw_cosine",
]
FINETUNE_ABLATIONS = [
    "zenith_w20",
    "zenith_w_epoch",
    "zenith_warmup_include",
    "zenith_lr_half",
    "zenith_lr2",
    "zenith_snr",
]
# Rows drawn solid, each in its own colour (the from-scratch ones keep theirs). The last is the
# demo's shipped ZENITH recipe, a main row of the from-scratch league since issue 17.
SOLID_VARIANTS = [*MAIN_VARIANTS, "zenith_adamw", "adamw_cosine", "zenith_warmup_exclude"]
