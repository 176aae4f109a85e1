"""The written rules that choose the bundled models from their evaluation figures.

One home for them: ``scripts/recipes.py`` applies them when it installs models, the test suite
checks the installed cards against them, and docs/results.md quotes them. Each takes
``retint evaluate`` summary rows (``{"psnr_ab": {"mean": ..}, "delta_e00": .., "cf_ratio": ..}``)
of a model and of the no-colour baseline.
"""

from __future__ import annotations

from collections.abc import Mapping

Row = Mapping[str, object]

#: The default model's colour goals on the held-out photos.
MIN_CF_RATIO = 0.60  # colourfulness at least 60 % of the truth's
MIN_PSNR_GAIN_DB = 0.5  # PSNR_ab at least this far above no colour
#: The fast model's goal: this close to the default on the held-out photos and on BSD100.
FAST_MAX_PSNR_DROP_DB = 0.5
FAST_MAX_CF_DROP = 0.10
FAST_SETS = ("held-out", "bsd100")
#: The hint model's goal: how much lower ΔE00 is with HINT_GOAL_POINTS hints than with none.
HINT_GOAL_POINTS = 10
HINT_GOAL_DROP = {"held-out": 3.0, "bsd100": 1.5}


def _mean(row: Row, key: str) -> float:
    return float(row[key]["mean"])  # type: ignore[index]


def goals_met(model: Row, base: Row) -> int:
    """How many of the three colour goals ``model`` meets (CF >= 60 % of the truth, PSNR_ab
    >= 0.5 dB above no colour, ΔE00 below no colour)."""
    return ((float(model["cf_ratio"]) >= MIN_CF_RATIO)  # type: ignore[arg-type]
            + (_mean(model, "psnr_ab") - _mean(base, "psnr_ab") >= MIN_PSNR_GAIN_DB)
            + (_mean(model, "delta_e00") < _mean(base, "delta_e00")))


def pick_default(rows: Mapping[str, Row], base: Row) -> str:
    """The default of the labelled ``rows`` (held-out figures): most goals met, then the
    lowest ΔE00 (the perceptual distance to the true colours, which punishes both sepia and
    confidently wrong colour)."""
    return min(rows, key=lambda m: (-goals_met(rows[m], base), _mean(rows[m], "delta_e00")))


def fast_goal_met(teacher: Mapping[str, Row], student: Mapping[str, Row]) -> bool:
    """Within 0.5 dB PSNR_ab and 10 points of colourfulness of the teacher on the held-out
    photos and on BSD100 (each argument maps a set name to its row; the >= 2x speed is
    ``retint bench``'s to show)."""
    for name in FAST_SETS:
        t, s = teacher[name], student[name]
        if (_mean(t, "psnr_ab") - _mean(s, "psnr_ab") > FAST_MAX_PSNR_DROP_DB
                or float(t["cf_ratio"]) - float(s["cf_ratio"]) > FAST_MAX_CF_DROP):  # type: ignore[arg-type]
            return False
    return True


#: The retrained default's goals at full resolution (each set's summary from the results).
QUALITY_DELTA_E_SETS = ("held-out", "bsd100", "people")
QUALITY_MIN_DELTA_E_DROP = 0.5  # ΔE00 at least this far below no colour
QUALITY_SETS = ("held-out", "bsd100")
QUALITY_MIN_PSNR_GAIN_DB = 0.8
QUALITY_MAX_B_OFFSET = 2.0  # mean b* of the results within this of the truths'


def quality_goals(sets: Mapping[str, Mapping], label: str, base: str,
                  previous: str | None = None) -> dict[str, bool]:
    """Each goal of a retrained default, by name -> met. ``sets`` maps a set name to its
    summary (``rows``, ``b_truth`` and a ``neutral`` block); ``previous`` is the default it
    replaces (its Fréchet distance must be beaten)."""
    goals: dict[str, bool] = {}
    for name in QUALITY_DELTA_E_SETS:
        if name in sets:
            rows = sets[name]["rows"]
            goals[f"{name}: ΔE00 {QUALITY_MIN_DELTA_E_DROP} below no colour"] = (
                _mean(rows[label], "delta_e00")
                <= _mean(rows[base], "delta_e00") - QUALITY_MIN_DELTA_E_DROP)
    for name in QUALITY_SETS:
        s = sets[name]
        row, b = s["rows"][label], s["rows"][base]
        goals[f"{name}: PSNR_ab +{QUALITY_MIN_PSNR_GAIN_DB} dB"] = (
            _mean(row, "psnr_ab") - _mean(b, "psnr_ab") >= QUALITY_MIN_PSNR_GAIN_DB)
        goals[f"{name}: CF >= {MIN_CF_RATIO:.0%} of the truth"] = (
            float(row["cf_ratio"]) >= MIN_CF_RATIO)
        goals[f"{name}: mean b* within {QUALITY_MAX_B_OFFSET:g} of the truth"] = (
            abs(_mean(row, "b_mean") - float(s["b_truth"]["mean"])) <= QUALITY_MAX_B_OFFSET)
        neutral = s.get("neutral", {}).get("rows")
        if neutral:
            goals[f"{name}: near-neutral ΔE00 no worse than gray"] = (
                _mean(neutral[label], "delta_e00") <= _mean(neutral[base], "delta_e00"))
        if previous and row.get("frechet_lite1") is not None:
            goals[f"{name}: Fréchet distance below {previous}'s"] = (
                float(row["frechet_lite1"]) < float(s["rows"][previous]["frechet_lite1"]))
    return goals
