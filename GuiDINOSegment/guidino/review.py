"""Whose voxels they are: the user's review state of a segment, and the one write rule of every run.

A prediction covers the slices it processed; the user's slices (marked reviewed, or edited along any
axis) are protected whatever the axis of the run. The Slicer Logic keeps a ``ReviewState`` in each
segment's tags and applies ``merge_prediction`` to the panel's result and the effect's preview alike.
No torch, no MRML.
"""

import base64
import hashlib
import json
import zlib
from dataclasses import dataclass, field

import numpy as np

from .corrections import connected_to, continuing
from .fusion import fuse_prediction


def slice_mask(shape, axis, indices):
    """A boolean voxel mask of ``shape`` selecting slices ``indices`` along numpy axis ``axis``."""
    mask = np.zeros(shape, bool)
    np.moveaxis(mask, axis, 0)[np.asarray(list(indices), dtype=int)] = True
    return mask


def merge_prediction(current, predicted, writable, evidence_axis=None, spacing=None, probability=None,
                     processed=None, user_slices=None):
    """The segment after a write (0/1 uint8): ``predicted`` (any label > 0) where ``writable``, else ``current``.

    ``evidence_axis``: for a model refined from a few corrections (``ModelConfig.region``), which knows nothing
    beyond them, the array axis of the user's slices: the prediction is first combined with the shape interpolated
    between the user's slices (``fusion.fuse_prediction``, from ``probability``: the model's foreground
    probability; ``processed``: per slice along that axis, whether the model ran there; ``user_slices``: the
    user's slices along it, by default those where nothing is writable), then only what
    connects to what the user labelled (``current`` where it is not writable) is written, and beyond the user's
    slices only what continues them (``corrections.continuing``; ``spacing``: voxel spacing in array order, mm).
    See ``merge_prediction_explained`` for where each slice's result came from.
    """
    return merge_prediction_explained(current, predicted, writable, evidence_axis, spacing, probability,
                                      processed, user_slices)[0]


def merge_prediction_explained(current, predicted, writable, evidence_axis=None, spacing=None, probability=None,
                               processed=None, user_slices=None):
    """``merge_prediction``'s segment and, for a region model's prediction, its ``fusion.FusedPrediction`` (where
    each slice's result came from; None otherwise)."""
    current, predicted = np.asarray(current), np.asarray(predicted)
    if current.shape != predicted.shape or np.shape(writable) != current.shape:
        raise ValueError(f"the prediction {predicted.shape}, the segment {current.shape} and the writable mask "
                         f"{np.shape(writable)} have different grids")
    fused = None
    if evidence_axis is not None:
        if spacing is None:
            raise ValueError("merging a region model's prediction needs the voxel spacing")
        if probability is not None:
            if user_slices is None:
                free = np.moveaxis(np.asarray(writable, bool), evidence_axis, 0)
                user_slices = np.flatnonzero(~free.reshape(free.shape[0], -1).any(axis=1)).tolist()
            fused = fuse_prediction(probability, current, user_slices, evidence_axis, spacing, processed)
            predicted = fused.labels
        predicted = connected_to(np.where(writable, predicted, 0), (current > 0) & ~np.asarray(writable, bool))
        predicted = continuing(predicted, writable, current, evidence_axis, spacing)
    return np.where(writable, predicted > 0, current > 0).astype(np.uint8), fused


# -- whose slices they are: the review state of one segment -------------------------------------------
STATE_VERSION = "1"


@dataclass
class ReviewState:
    """What the user owns in a segment, slice by slice, and the baseline edits are measured against.

    ``marked[axis]`` and ``edited[axis]``: slice indices along an anatomical axis that the user marked
    reviewed or edited. Such a slice is the user's for every run, along any axis: the model changes
    none of its voxels (``protected``). ``axis``: the axis of the latest run or mark (the default
    for corrections). ``fingerprint`` / ``baseline``: per-slice CRC32s along numpy axes 0, 1, 2 and
    the SHA-1 of the segment as GuiDINO last saw it, so that edits made while nobody watched (in
    another program, before a save) are still found.
    """

    axis: str = "axial"
    marked: dict = field(default_factory=dict)
    edited: dict = field(default_factory=dict)
    shape: tuple = ()
    fingerprint: dict = field(default_factory=dict)
    baseline: str = ""

    def user_slices(self, axis):
        """The slices along ``axis`` that are the user's (marked or edited), sorted."""
        return sorted(set(self.marked.get(axis, ())) | set(self.edited.get(axis, ())))

    def protected(self, shape, numpy_axes):
        """The voxels no run may change: every user slice along every axis (``numpy_axes``: name -> axis)."""
        mask = np.zeros(shape, bool)
        for name, axis in numpy_axes.items():
            slices = [s for s in self.user_slices(name) if 0 <= s < shape[axis]]
            if slices:
                np.moveaxis(mask, axis, 0)[slices] = True
        return mask

    def add(self, kind, axis, slices):
        """Make ``slices`` along ``axis`` the user's, as ``kind`` "marked" (reviewed) or "edited"."""
        book = self.marked if kind == "marked" else self.edited
        _update(book, axis, set(book.get(axis, ())) | {int(s) for s in slices})

    def remove(self, axis, slices):
        """Give slices back to the model: neither marked nor edited any more."""
        for book in (self.marked, self.edited):
            _update(book, axis, set(book.get(axis, ())) - {int(s) for s in slices})

    def encode(self):
        """Text for a segment tag (saved in .seg.nrrd, restored by undo): version, then zlib+base64 JSON."""
        data = {"axis": self.axis, "marked": self.marked, "edited": self.edited, "shape": list(self.shape),
                "fingerprint": self.fingerprint, "baseline": self.baseline}
        return STATE_VERSION + ":" + base64.b64encode(zlib.compress(json.dumps(data).encode(), 9)).decode()

    @classmethod
    def decode(cls, text):
        """The state in a segment tag; None when there is none or it cannot be read (then nothing is known)."""
        if not text or not text.startswith(STATE_VERSION + ":"):
            return None
        try:
            data = json.loads(zlib.decompress(base64.b64decode(text[len(STATE_VERSION) + 1:])))
            return cls(str(data["axis"]), {k: [int(s) for s in v] for k, v in data["marked"].items()},
                       {k: [int(s) for s in v] for k, v in data["edited"].items()}, tuple(data["shape"]),
                       {k: [int(c) for c in v] for k, v in data["fingerprint"].items()}, str(data["baseline"]))
        except (ValueError, KeyError, TypeError, AttributeError, zlib.error):
            return None


def _update(book, axis, slices):
    if slices:
        book[axis] = sorted(slices)
    else:
        book.pop(axis, None)


def fingerprint(mask, previous=None, changed=None):
    """CRC32 of every slice of a binary mask along each numpy axis: {"0": [...], "1": [...], "2": [...]}.

    Each CRC is of the slice's bytes in C order (``np.take(mask, i, axis)``). ``previous`` (the fingerprint of an
    earlier content) and ``changed`` ((lo, hi) index bounds per axis of every voxel that differs from it): only the
    slices crossing that box are computed again.
    """
    voxels = np.ascontiguousarray(mask)
    voxels = voxels.view(np.uint8) if voxels.dtype == bool else voxels.astype(np.uint8)  # a view: the same bytes
    result = {}
    for axis in range(voxels.ndim):
        count = voxels.shape[axis]
        todo = range(count) if previous is None or changed is None else range(*changed[axis])
        crcs = list(previous[str(axis)]) if previous is not None and changed is not None else [0] * count
        if changed is None:
            for index in todo:
                crcs[index] = zlib.crc32(np.ascontiguousarray(np.take(voxels, index, axis=axis)).data)
        elif len(todo):  # a few slices: one contiguous copy of them all is faster than one strided copy each
            block = np.ascontiguousarray(np.moveaxis(voxels, axis, 0)[todo.start:todo.stop])
            for offset, index in enumerate(todo):
                crcs[index] = zlib.crc32(block[offset].data)
        result[str(axis)] = crcs
    return result


def content_hash(mask):
    """SHA-1 of a binary mask (its shape and bits)."""
    mask = np.asarray(mask, dtype=bool)
    return hashlib.sha1(repr(mask.shape).encode() + np.packbits(mask).tobytes()).hexdigest()


def changed_from_fingerprint(current, state):
    """A superset of the voxels that differ from the baseline ``state`` describes: those whose slices differ
    along all three axes. None when the state has no fingerprint of this grid (nothing is known)."""
    current = np.asarray(current, dtype=bool)
    if tuple(state.shape) != current.shape or sorted(state.fingerprint) != ["0", "1", "2"]:
        return None
    now = fingerprint(current)
    changed = [np.asarray(now[k]) != np.asarray(state.fingerprint[k]) for k in ("0", "1", "2")]
    return changed[0][:, None, None] & changed[1][None, :, None] & changed[2][None, None, :]


def attribute_edits(diff, numpy_axes, prefer=None):
    """The slices, along each anatomical axis, that the edited voxels ``diff`` were drawn on.

    A stroke drawn on one slice changes voxels of that slice only, so the slice holding the most
    changed voxels is taken first (with every slice that ties with it: a single changed row lies in a
    slice of two axes, and both are then the user's), its voxels are set aside, and so on until every
    changed voxel lies in a chosen slice. ``numpy_axes``: anatomical name -> numpy axis; ``prefer``
    orders the names (ties within one axis are all kept). Returns {name: set of slice indices}.
    """
    coords = np.nonzero(np.asarray(diff, dtype=bool))
    names = sorted(numpy_axes, key=lambda n: (n != prefer, n))
    chosen = {name: set() for name in names}
    remaining = np.ones(len(coords[0]), bool)
    while remaining.any():
        counts = {name: np.bincount(coords[numpy_axes[name]][remaining]) for name in names}
        best = max(int(c.max()) for c in counts.values())
        for name in names:
            for index in np.flatnonzero(counts[name] == best).tolist():
                chosen[name].add(index)
                remaining &= coords[numpy_axes[name]] != index
    return chosen


def content_slices(mask, axis):
    """The slices along numpy ``axis`` that hold any voxel of ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    return np.flatnonzero(np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).any(1)).tolist()
