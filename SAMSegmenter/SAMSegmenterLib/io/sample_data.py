"""Real sample volumes that ship inside installed PyPI packages (no network).

- ``mni152``: the MNI152 2009 T1 template from nilearn (197 x 233 x 189, 1 mm),
  with nilearn's brain, grey-matter and white-matter masks as reference labels.
- ``ct_small``: pydicom's ``CT_small.dcm``, one real 128 x 128 CT slice in HU.

These packages are needed only for the samples, not by the engine.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from .outputs import StagedOutputs, check_output_file

if TYPE_CHECKING:
    from .volumes import Geometry

SAMPLES = ("mni152", "mni152_brain", "mni152_gm", "mni152_wm", "ct_small")


def _nilearn_image(name: str):
    try:
        from nilearn import datasets
    except ImportError:
        raise InputError("the MNI152 sample needs nilearn: pip install nilearn") from None
    loaders = {"mni152": datasets.load_mni152_template, "mni152_brain": datasets.load_mni152_brain_mask,
               "mni152_gm": datasets.load_mni152_gm_mask, "mni152_wm": datasets.load_mni152_wm_mask}
    return loaders[name](resolution=1)


def write_sample(name: str, path: str | Path, staging: StagedOutputs | None = None) -> Path:
    """Write sample ``name`` (see SAMPLES) as a volume file (format by extension), atomically.

    With ``staging`` the file is only staged there (it appears when the caller commits) and the
    temporary file's path is returned, to be read meanwhile; otherwise ``path``. Raises InputError
    (unknown name, package missing) or OutputError (the file cannot be written).
    """
    path = Path(path)
    if name not in SAMPLES:
        raise InputError(f"unknown sample {name!r}; choose from {', '.join(SAMPLES)}")
    if staging is not None:
        return staging.write(path, lambda temporary: _write(name, temporary))
    check_output_file(path)
    with StagedOutputs() as staged:
        write_sample(name, path, staged)
        staged.commit()
    return path


def _write(name: str, path: Path) -> None:
    if name == "ct_small":
        try:
            from pydicom.data import get_testdata_file
        except ImportError:
            raise InputError("the CT sample needs pydicom: pip install pydicom") from None
        import SimpleITK as sitk

        sitk.WriteImage(sitk.ReadImage(get_testdata_file("CT_small.dcm")), str(path))
        return
    image = _nilearn_image(name)
    if name != "mni152":  # masks come as float 0/1 or probabilities: store as labels
        import nibabel

        data = (np.asanyarray(image.dataobj) > 0.5).astype(np.uint8)
        image = nibabel.Nifti1Image(data, image.affine)
    image.to_filename(str(path))


def load_sample(name: str) -> tuple[np.ndarray, Geometry]:
    """Sample ``name`` as (array [k, j, i], geometry), through a temporary NIfTI file."""
    from .volumes import read_volume

    with tempfile.TemporaryDirectory() as tmp:
        return read_volume(write_sample(name, Path(tmp) / f"{name}.nii.gz"))
