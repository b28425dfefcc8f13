"""SAMSegmenter Web: the SAM segmentation app in a browser, on 3D Slicer's libraries (trame-slicer).

Start it with ``python -m SAMSegmenterLib web``. Installed by pip only (the ``web`` extra), never
by the Slicer extension's CMake. Importing this package imports nothing heavy; the modules need
trame-slicer (and with it slicer-core and VTK).
"""
