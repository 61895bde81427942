"""A copy of Kvasir-SEG small enough to carry to a GPU machine (the device tool carries at most 64 MiB).

Training letterboxes every image to the model size (256 px), so the train split is stored with its
longer side at ``--train-size`` (default 320, above the model size): training sees the same pixels.
The val split is copied untouched: it is scored at native resolution.

    python benchmarks/pack_kvasir.py --data ../shared/data/kvasir-seg --out kvasir-small
"""

import argparse
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from skimage.transform import resize


def shrink(source, target, longest, is_mask):
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(source)))
    scale = longest / max(image.shape[:2])
    if scale < 1:
        shape = (round(image.shape[0] * scale), round(image.shape[1] * scale)) + image.shape[2:]
        image = resize(image, shape, order=0 if is_mask else 1, anti_aliasing=not is_mask, preserve_range=True)
    image = image.astype(np.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(target))
    if target.suffix.lower() in (".jpg", ".jpeg"):
        writer.SetImageIO("JPEGImageIO")
        writer.SetCompressionLevel(92)
        writer.UseCompressionOn()
    writer.Execute(sitk.GetImageFromArray(image, isVector=image.ndim == 3))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-size", type=int, default=320)
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    if out.exists():
        parser.error(f"{out} exists; choose a new folder")
    for folder in ("images", "masks"):
        for source in sorted((data / "train" / folder).iterdir()):
            target = out / "train" / folder / (source.stem + (".png" if folder == "masks" else source.suffix))
            shrink(source, target, args.train_size, is_mask=folder == "masks")
    shutil.copytree(data / "val", out / "val")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
