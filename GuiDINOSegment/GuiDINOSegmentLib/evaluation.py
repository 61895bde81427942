"""Evaluate a model on a labelled dataset at the images' native resolution."""

from pathlib import Path

from .metrics import case_metrics, summarize
from .volume import read_image, read_labels, segment_volume


def evaluate_pairs(model, pairs, axis="axial", device="auto", progress=None, guide_stride="auto"):
    """Metrics per (image, labels) pair and their means: ``{"n", "dice", "iou", "hd95", "cases"}``.

    2D images are scored in pixels at native resolution; volumes in millimetres (their spacing).
    Any label > 0 is foreground. ``guide_stride`` as in ``segment_volume``; each case records the
    stride it resolved to, the summary the setting asked for.
    """
    cases, units = [], "mm"
    for number, (image_path, label_path) in enumerate(pairs, 1):
        image = read_image(image_path)
        truth = read_labels(label_path, like=None if image.is_2d else image) > 0
        result = segment_volume(model, image, axis=axis, device=device, guide_stride=guide_stride)
        pred = result.labels > 0
        if image.is_2d:
            units = "pixels at native resolution"
            scores = case_metrics(pred[0], truth.reshape(pred.shape)[0])
        else:
            scores = case_metrics(pred, truth, spacing=image.geometry.spacing[::-1])
        cases.append({"name": Path(image_path).name, **scores, "guide_stride": result.guide_stride})
        if progress is not None:
            progress(number, len(pairs))
    summary = summarize(cases)
    summary["cases"] = cases
    summary["units"] = {"hd95": units}
    summary["guide_stride"] = guide_stride
    return summary
