"""The GuiDINO Train panel's decisions and its background run, without qt.

The module file ``GuiDINOTrain.py`` only wires the widgets; what it shows and when it calls the
Logic is decided here, so it is tested without the Slicer application. ``RefineRun`` drives one
refinement: train (the GuiDINO worker process), save and activate (main thread), re-segment (the
worker), write (main). It reads and writes MRML only through the nodes and the Logic it is given, and imports
neither ``slicer`` nor qt (its texts are English, like ``WidgetHelpers``').
"""

import datetime
from dataclasses import dataclass
from pathlib import Path

from GuiDINOSegmentLib import WidgetHelpers as helpers

PREFERRED_SEGMENT_NAME = "GuiDINO"  # the segment GuiDINO Segment writes by default
NOTHING_TO_TRAIN = "Choose what to train: TokenBook, Network or LoRA."
STOP_REASONS = {"time budget": "the time budget ran out", "cancelled": "cancelled, the weights so far were kept"}


# -- the panel's decisions (plain functions) -------------------------------------------------
def trainParts(tokenbook, network, lora):
    """The Logic's ``train`` string ('tokenbook+network+lora') from the three check boxes."""
    parts = [name for name, on in (("tokenbook", tokenbook), ("network", network), ("lora", lora)) if on]
    if not parts:
        raise ValueError(NOTHING_TO_TRAIN)
    return "+".join(parts)


def timeBudgetSeconds(value):
    """The spin box's seconds as the Logic wants them: None (no limit) for 0."""
    value = float(value or 0)
    return value if value > 0 else None


def refineProblem(hasVolume, hasSegmentation, hasSegment, parts):
    """Why Refine cannot start ('' when it can): the button's tooltip."""
    if not hasVolume:
        return "Select the input volume."
    if not hasSegmentation:
        return "Select the segmentation holding your corrections."
    if not hasSegment:
        return "Select the corrected segment."
    if not any(parts):
        return NOTHING_TO_TRAIN
    return ""


def pickSegmentId(current, segmentIds, preferred=None):
    """The segment to show: the current one if it still exists, else ``preferred``, else the first ('' if none)."""
    segmentIds = list(segmentIds)
    for candidate in (current, preferred):
        if candidate and candidate in segmentIds:
            return candidate
    return segmentIds[0] if segmentIds else ""


def samePath(a, b):
    if not a or not b:
        return False
    return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()


def formatCreated(text, tz=None):
    """'2026-08-21 12:55' (local time, or ``tz``) from a bundle's ISO 'created' time; '?' when unknown."""
    if not text:
        return "?"
    try:
        when = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    if when.tzinfo is not None:
        when = when.astimezone(tz)
    return when.strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class VersionRow:
    text: str
    path: str
    active: bool
    toolTip: str


def versionRows(versions, activeModel=None, tz=None):
    """The versions list from the Logic's ``versions()`` (oldest first): newest first, the active one marked."""
    rows = []
    for version in reversed(list(versions)):
        path = Path(version["path"])
        active = samePath(path, activeModel)
        slices = version.get("slices") or []
        parent = version.get("parent")
        text = f"{path.name}{'  (active)' if active else ''}  {formatCreated(version.get('created'), tz)}"
        if slices:
            text += f"  slices {helpers.formatSlices(slices)}"
        origin = f"refined from {Path(parent).name}" if parent else "not refined from another version"
        rows.append(VersionRow(text, str(path), active, f"{path}\n{origin}"))
    return rows


def activeVersionSlices(versions, activeModel):
    """The corrected slices the active version was trained on; None when it is not in the versions list."""
    for version in versions:
        if samePath(version["path"], activeModel):
            return sorted(int(s) for s in version.get("slices") or [])
    return None


def correctionRows(corrections, trainedSlices=None):
    """One line per corrected slice: its number and whether the active model was trained on it."""
    trained = set(trainedSlices or ())
    return [f"Slice {index}: " + ("in the active model" if index in trained else "new, not trained on yet")
            for index in sorted(int(s) for s in corrections["slices"])]


def correctionsSummary(corrections, trainedSlices=None):
    slices = sorted(int(s) for s in corrections["slices"])
    if not slices:
        return ("No corrections yet: edit the segment on a few slices with the Segment Editor, or mark slices "
                "that are right as reviewed in GuiDINO Segment.")
    new = len(set(slices) - set(trainedSlices or ()))
    return (f"{len(slices)} corrected {corrections['axis']} slices ({helpers.formatSlices(slices)}), "
            f"{new} new since the active model.")


def activeModelText(activeModel):
    if not activeModel:
        return "Active model: none yet (the default model, or a new one from the guide)"
    return f"Active model: {Path(activeModel).name}"


def trainingProgress(info, timeBudget=None):
    """(percent, text) of the progress bar from the latest training progress entry (None before the first)."""
    if not info:
        return 0, "Preparing the training..."
    step, total, seconds = int(info.get("step", 0)), int(info.get("total", 0)), float(info.get("seconds") or 0.0)
    fraction = step / total if total else 0.0
    if timeBudget:
        fraction = max(fraction, seconds / timeBudget)
    text = f"Training: step {step} / {total}"
    if info.get("loss") is not None:
        text += f", loss {info['loss']:.3f}"
    return int(100 * min(fraction, 1.0)), f"{text}, {helpers.formatDuration(seconds)}"


def refineSummary(result):
    """The status line after a refinement (a RefineFromCorrectionsResult)."""
    if result.bundle is None:
        return "Cancelled: this round was discarded; the active model is unchanged."
    text = (f"Saved {Path(result.bundle).name} and made it the active model: {result.steps} steps in "
            f"{helpers.formatDuration(result.seconds)} on {len(result.slices)} corrected slices")
    if result.interpolated:
        text += f" and {len(result.interpolated)} beside them labelled by interpolation"
    if result.stopped in STOP_REASONS:
        text += f"; stopped: {STOP_REASONS[result.stopped]}"
    return text + "."


def resegmentAfterTraining(result, cancelRequested):
    """(re-segment now?, note): after a cancel the new version is kept but nothing is re-segmented."""
    if result.bundle is None:
        return False, ""
    if cancelRequested or result.stopped == "cancelled":
        return False, "The slices were not re-segmented: press Refine again, or Run in GuiDINO Segment."
    return True, ""


def abandonedSummary(savedBundle):
    """The status line when the scene closed during a run; ``savedBundle``: the version the worker had saved by
    then (it stays in the models folder and in the versions list), or None."""
    if savedBundle is None:
        return "Cancelled: the scene was closed; nothing was saved or written."
    return (f"Cancelled: the scene was closed. {Path(savedBundle).name} was saved in the models folder (listed under "
            "Model versions) but not made active; nothing was written.")


def segmentedSummary(processResult):
    text = (f"{processResult.slicesProcessed} slices re-segmented in {helpers.formatDuration(processResult.seconds)}; "
            "reviewed slices kept.")
    if processResult.fusion is not None:
        text += " " + helpers.fusionSummary(processResult.fusion)
    return text + (" Cancelled: the slices done were kept." if processResult.cancelled else "")
