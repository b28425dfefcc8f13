"""RAS / IJK / slice geometry on a real MRML scene with an oblique, LPS-flipped, anisotropic volume read from a file."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from mrml_scene import OBLIQUE_SPACING, matrix_array, oblique  # noqa: F401  (fixture)

from SAMSegmenterLib.errors import PromptError
from SAMSegmenterLib.volume import take_slice
from SAMSegmenterMRML.geometry import (
    SliceRef,
    choose_slice,
    ijk_to_world,
    slice_xy,
    view_slice,
    volume_ijk_to_world,
    world_to_ijk,
    xy_to_ijk,
)
from SAMSegmenterMRML.slice_prompts import build_slice_prompt


def shape_of(volume) -> tuple[int, int, int]:
    return tuple(int(n) for n in reversed(volume.GetImageData().GetDimensions()))


def test_volume_file_keeps_oblique_flipped_anisotropic_grid(oblique):
    ijk_to_ras = vtk.vtkMatrix4x4()
    oblique.volume.GetIJKToRASMatrix(ijk_to_ras)
    np.testing.assert_allclose(matrix_array(ijk_to_ras), oblique.ijk_to_ras, atol=1e-5)
    np.testing.assert_allclose(oblique.volume.GetSpacing(), OBLIQUE_SPACING, rtol=1e-6)
    directions = oblique.ijk_to_ras[:3, :3] / np.linalg.norm(oblique.ijk_to_ras[:3, :3], axis=0)
    assert directions[0, 0] < -0.9 and directions[1, 1] < -0.9  # LPS-flipped: i runs to the left, j to posterior
    assert np.min(np.abs(directions[np.abs(directions) > 1e-9])) < 0.9  # oblique, not axis-aligned
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(oblique.volume), oblique.array)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_ras_prompts_land_on_their_voxels(oblique, axis):
    """A point placed (as a markup) at a voxel centre in RAS addresses that voxel in take_slice's (x=col, y=row)."""
    shape = shape_of(oblique.volume)
    k, j, i = 3, 47, 21
    markup = oblique.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    ras = ijk_to_world([(i, j, k)], oblique.ijk_to_ras)[0]
    markup.AddControlPointWorld(*ras)
    placed = slicer.util.arrayFromMarkupsControlPoints(markup, world=True)
    prompt = build_slice_prompt(shape, volume_ijk_to_world(oblique.volume), placed, [1], axis=axis)
    assert prompt.ref == SliceRef(axis, (k, j, i)[axis])
    x, y = prompt.points[0]
    assert take_slice(oblique.array, axis, prompt.ref.index)[y, x] == oblique.array[k, j, i]
    assert (x, y) == {0: (i, j), 1: (i, k), 2: (j, k)}[axis]
    oblique.scene.RemoveNode(markup)


def test_box_in_ras_gives_voxel_box_and_infers_axis(oblique):
    shape = shape_of(oblique.volume)
    corners_ijk = np.array([(10.2, 12.8, 2.1), (60.4, 70.0, 1.9)])  # k rounds to 2 for both corners
    corners_ras = ijk_to_world(corners_ijk, oblique.ijk_to_ras)
    prompt = build_slice_prompt(shape, volume_ijk_to_world(oblique.volume), box=corners_ras)
    assert prompt.ref == SliceRef(0, 2)
    assert prompt.box == (10, 13, 60, 70)
    assert prompt.points == ()


def test_ijk_coordinates_match_ras_coordinates(oblique):
    shape = shape_of(oblique.volume)
    to_world = volume_ijk_to_world(oblique.volume)
    points_ijk = [(30, 20, 4), (35, 41, 4)]
    box_ijk = [(5, 6, 4), (70, 72, 4)]
    from_ijk = build_slice_prompt(shape, to_world, points_ijk, [1, 0], box_ijk, coordinates="IJK")
    from_ras = build_slice_prompt(
        shape, to_world, ijk_to_world(points_ijk, to_world), [1, 0], ijk_to_world(box_ijk, to_world), coordinates="RAS"
    )
    assert from_ijk == from_ras
    assert from_ijk.ref == SliceRef(0, 4) and from_ijk.points == ((30, 20), (35, 41)) and from_ijk.labels == (1, 0)


def test_prompts_off_one_slice_are_refused(oblique):
    shape = shape_of(oblique.volume)
    to_world = volume_ijk_to_world(oblique.volume)
    with pytest.raises(PromptError, match="several axes"):
        build_slice_prompt(shape, to_world, [(30, 20, 4)], coordinates="IJK")
    with pytest.raises(PromptError, match="different K slices \\[3, 4\\]"):
        build_slice_prompt(shape, to_world, [(30, 20, 4), (31, 25, 3)], coordinates="IJK", axis="K")
    with pytest.raises(PromptError, match="do not lie on one slice"):
        build_slice_prompt(shape, to_world, [(30, 20, 4), (31, 25, 3), (40, 30, 5)], coordinates="IJK")
    with pytest.raises(PromptError, match="outside"):
        build_slice_prompt(shape, to_world, [(95, 20, 4)], coordinates="IJK", axis="K")
    with pytest.raises(PromptError, match="outside the volume"):
        build_slice_prompt(shape, to_world, [(30, 20, 9)], coordinates="IJK", axis="K")
    with pytest.raises(PromptError, match="two opposite corners"):
        build_slice_prompt(shape, to_world, box=[(30, 20, 4)], coordinates="IJK")
    with pytest.raises(PromptError, match="labels"):
        build_slice_prompt(shape, to_world, [(30, 20, 4), (31, 25, 4)], [1], coordinates="IJK")


def test_box_partly_outside_the_slice_is_clipped(oblique):
    shape = shape_of(oblique.volume)
    prompt = build_slice_prompt(shape, np.eye(4), box=[(-5, 10, 1), (90, 30, 1)], coordinates="IJK")
    assert prompt.box == (0, 10, shape[2] - 1, 30)


def test_parent_transform_is_applied(oblique):
    transform = oblique.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = (5.0, -7.0, 11.0)
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    oblique.volume.SetAndObserveTransformNodeID(transform.GetID())
    try:
        world = ijk_to_world([(21, 47, 3)], oblique.ijk_to_ras)[0] + shift[:3, 3]
        np.testing.assert_allclose(world_to_ijk(world, volume_ijk_to_world(oblique.volume))[0], (21, 47, 3), atol=1e-6)
    finally:
        oblique.volume.SetAndObserveTransformNodeID(None)
        oblique.scene.RemoveNode(transform)


@pytest.mark.parametrize("orientation, component", [("Axial", 2), ("Sagittal", 0), ("Coronal", 1)])
def test_slice_view_rotated_to_volume_plane_gives_an_axis(oblique, orientation, component):
    slice_node = oblique.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    slice_node.SetOrientation(orientation)
    slice_node.RotateToVolumePlane(oblique.volume)
    slice_to_ras = matrix_array(slice_node.GetSliceToRAS())
    normal = slice_to_ras[:3, 2]
    column = oblique.ijk_to_ras[:3, component]
    assert abs(np.dot(normal, column) / np.linalg.norm(column)) > 0.9999  # Slicer aligned the view to an IJK axis
    # a view plane through the centre of slice 3 along that axis shows slice 3 of axis 2 - component
    centre_ijk = np.array(shape_of(oblique.volume)[::-1], dtype=float) / 2
    centre_ijk[component] = 3
    slice_to_ras[:3, 3] = ijk_to_world(centre_ijk, oblique.ijk_to_ras)[0]
    ref = view_slice(slice_to_ras, volume_ijk_to_world(oblique.volume), shape_of(oblique.volume))
    assert ref == SliceRef(2 - component, 3)
    slice_to_ras[:3, 3] = (500.0, 500.0, 500.0)
    with pytest.raises(PromptError, match="outside the volume"):
        view_slice(slice_to_ras, volume_ijk_to_world(oblique.volume), shape_of(oblique.volume))
    oblique.scene.RemoveNode(slice_node)


def test_slice_view_not_aligned_to_an_oblique_volume_is_refused(oblique):
    slice_node = oblique.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    slice_node.SetOrientation("Axial")
    with pytest.raises(PromptError, match="Rotate to volume plane"):
        view_slice(
            matrix_array(slice_node.GetSliceToRAS()), volume_ijk_to_world(oblique.volume), shape_of(oblique.volume)
        )
    oblique.scene.RemoveNode(slice_node)


def test_choose_slice_uses_the_given_axis_for_a_single_point():
    assert choose_slice(np.array([[3.2, 4.6, 1.4]]), (5, 10, 10), axis="J") == SliceRef(1, 5)
    assert choose_slice(np.array([[3.5, 4.5, 1.5]]), (5, 10, 10), axis=0) == SliceRef(0, 2)  # halves round up


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_xy_and_xy_to_ijk_are_inverse(axis):
    ijk = np.array([[3.0, 5.0, 7.0], [11.0, 2.0, 4.0]])
    ijk[:, 2 - axis] = 6.0  # both points on slice 6 of the axis
    np.testing.assert_array_equal(xy_to_ijk(slice_xy(ijk, axis), SliceRef(axis, 6)), ijk)
