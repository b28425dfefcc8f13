"""Render Resources/Screenshot01.png: a real LiteMedSAM result on the MNI152 template.

An axial slice of the template (nilearn, offline) is prompted with a box around the
second largest piece of nilearn's brain mask on that slice (a temporal lobe); the
figure shows the slice, the box and the predicted mask as the SAM effect previews them.
Run from the repository root: ``python Resources/make_screenshot.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SAMSegmenter"))

from SAMSegmenterLib.models import load_model  # noqa: E402
from SAMSegmenterLib.predictor import SlicePredictor  # noqa: E402
from SAMSegmenterLib.prompts import Prompt, box_from_mask  # noqa: E402
from SAMSegmenterLib.sample_data import load_sample  # noqa: E402

SLICE = 35


def main() -> None:
    template, _ = load_sample("mni152")
    brain = load_sample("mni152_brain")[0][SLICE] > 0
    pieces = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.GetImageFromArray(brain.astype(np.uint8))))
    target = sitk.GetArrayFromImage(pieces) == 2
    box = box_from_mask(target)
    predictor = SlicePredictor(load_model("litemedsam", device="cpu"), template)
    prediction = predictor.predict(0, SLICE, Prompt(box=box))
    image = predictor.slice_image(0, SLICE)

    figure, axes = plt.subplots(figsize=(6.4, 6.4), dpi=100)
    figure.patch.set_facecolor("black")
    axes.imshow(image, cmap="gray", origin="lower")
    overlay = np.zeros(image.shape + (4,))
    overlay[prediction.mask] = (1.0, 0.55, 0.1, 0.45)
    axes.imshow(overlay, origin="lower")
    axes.contour(prediction.mask, levels=[0.5], colors=["#ff8c1a"], linewidths=1.5, origin="lower")
    x0, y0, x1, y1 = box
    axes.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, edgecolor="#ffdb26",
                                 linewidth=2))
    dice = 2 * (prediction.mask & target).sum() / (prediction.mask.sum() + target.sum())
    axes.set_title(
        f"LiteMedSAM, box prompt on MNI152 axial slice {SLICE}\n"
        f"predicted IoU {prediction.score:.2f}, Dice {dice:.2f} against nilearn's brain mask",
        color="white",
        fontsize=9,
    )
    axes.set_axis_off()
    figure.tight_layout()
    path = ROOT / "Resources" / "Screenshot01.png"
    figure.savefig(path, facecolor=figure.get_facecolor())
    print(f"{path.relative_to(ROOT)} written")


if __name__ == "__main__":
    main()
