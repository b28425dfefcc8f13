"""Volumes in and out: files, DICOM series, outputs written atomically, sample data.

- :mod:`.volumes`: read a NIfTI/NRRD/MetaImage file or a DICOM folder into an array
  ``[k, j, i]`` and its :class:`Geometry` (IJK -> RAS); write label volumes (``.seg.nrrd``, NIfTI).
- :mod:`.dicom`: choosing and reading one DICOM series; :mod:`.nifti`: checks of NIfTI files.
- :mod:`.outputs`: staged outputs renamed into place together; :mod:`.native_output`: what
  SimpleITK/ITK print while reading, captured for error messages.
- :mod:`.sample_data`: the MNI152 template and pydicom's CT slice.

The names below come from :mod:`.volumes`, imported on first use (PEP 562) so that importing
one submodule does not load SimpleITK.
"""

import importlib

_EXPORTS = ("Geometry", "LABEL_SUFFIXES", "VOLUME_SUFFIXES", "check_volume", "read_volume", "verify_written",
            "write_labels")

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(".volumes", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
