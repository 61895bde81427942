"""Evaluate a model on a labelled dataset at the images' native resolution."""

from pathlib import Path

from .imageio import read_image, read_labels
from .inference import segment_volume
from .metrics import case_metrics, multiclass_case_metrics, summarize


def evaluate_pairs(model, pairs, axis="axial", device="auto", progress=None, guide_stride="auto"):
    """Metrics per (image, labels) pair and their means: ``{"n", "dice", "iou", "hd95", "cases"}``.

    2D images are scored in pixels at native resolution; volumes in millimetres (their spacing).
    Any label > 0 is foreground. Models with more than one foreground class are also scored per
    class (label value c against class c, c = 1 .. num_classes - 1) under ``"classes"``, in each
    case and as means. ``guide_stride`` as in ``segment_volume``; each case records the stride it
    resolved to, the summary the setting asked for.
    """
    classes = range(1, model.config.num_classes) if model.config.num_classes > 2 else ()
    cases, units = [], "mm"
    for number, (image_path, label_path) in enumerate(pairs, 1):
        image = read_image(image_path)
        truth = read_labels(label_path, like=None if image.is_2d else image)
        result = segment_volume(model, image, axis=axis, device=device, guide_stride=guide_stride)
        pred = result.labels
        if image.is_2d:
            units, spacing = "pixels at native resolution", None
            pred, truth = pred[0], truth.reshape(pred.shape)[0]
        else:
            spacing = image.geometry.spacing[::-1]
        case = {"name": Path(image_path).name, **case_metrics(pred > 0, truth > 0, spacing=spacing),
                "guide_stride": result.guide_stride}
        if classes:
            per_class = multiclass_case_metrics(pred, truth, classes, spacing=spacing)
            case["classes"] = {str(c): scores for c, scores in per_class.items()}
        cases.append(case)
        if progress is not None:
            progress(number, len(pairs))
    summary = summarize(cases)
    if classes:
        summary["classes"] = {str(c): summarize([case["classes"][str(c)] for case in cases]) for c in classes}
    summary["cases"] = cases
    summary["units"] = {"hd95": units}
    summary["guide_stride"] = guide_stride
    return summary
