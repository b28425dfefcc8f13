"""Broken weights files: one clear reason each, never PyTorch's advice to load unsafely; damaged cached
weights are shown as such by ``models``."""

from __future__ import annotations

import pickle
import zipfile

import pytest
from errors_support import run_cli

from SAMSegmenterLib.errors import CheckpointError
from SAMSegmenterLib.models import litemedsam_checkpoint, load_model


class Payload:
    """Unpickling this runs code: what weights_only loading exists to refuse."""

    def __reduce__(self):
        return (print, ("this ran",))


def _checkpoints(tmp_path) -> dict:
    import torch

    real = litemedsam_checkpoint().read_bytes()
    files = {
        "random.pth": bytes(range(256)) * 40,
        "empty.pth": b"",
        "cut.pth": real[:len(real) // 3],
        "text.pth": b"model weights go here\n",
        "pickle.pth": pickle.dumps({"weights": [1, 2, 3]}, protocol=4),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"model": Payload()}, tmp_path / "code.pth")
    torch.save({"image_encoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
    state = torch.load(litemedsam_checkpoint(), map_location="cpu", weights_only=True)
    state["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    torch.save(state, tmp_path / "shape.pth")
    with zipfile.ZipFile(tmp_path / "archive.pth", "w") as archive:
        archive.writestr("readme.txt", "a zip archive, not a checkpoint")
    (tmp_path / "folder.pth").mkdir()
    return {
        "random.pth": "is not a PyTorch weights file",
        "empty.pth": "is empty (0 bytes)",
        "cut.pth": "is truncated or damaged",
        "text.pth": "is not a PyTorch weights file",
        "pickle.pth": "holds Python objects other than tensors",
        "code.pth": "holds Python objects other than tensors",
        "other.pth": "435 of the model's 435 tensors are missing",
        "shape.pth": "mask_decoder.iou_token.weight has shape (2, 256), the model's (1, 256)",
        "archive.pth": "is truncated or damaged",
        "folder.pth": "is a folder, not a weights file",
        "missing.pth": "does not exist",
    }


def test_broken_checkpoints_give_one_reason(tmp_path, capfd):
    for name, reason in _checkpoints(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            load_model("litemedsam", device="cpu", checkpoint=tmp_path / name, backend="torch")
        message = str(info.value)
        assert reason in message and str(tmp_path / name) in message, (name, message)
        assert "\n" not in message and "weights_only" not in message and "this ran" not in message, message
    printed = capfd.readouterr()
    assert "this ran" not in printed.out and "Detected pickle protocol" not in printed.err


def test_cli_checkpoint_errors_are_one_line(tmp_path):
    _checkpoints(tmp_path)
    volume = tmp_path / "volume.nrrd"
    volume.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 8 8 2\nencoding: raw\n\n" + bytes(128))
    for name in ("random.pth", "code.pth"):
        done = run_cli("segment", str(volume), str(tmp_path / "x.nii.gz"), "--box", "1", "1", "5", "5",
                       "--checkpoint", str(tmp_path / name))
        lines = [line for line in done.stderr.splitlines() if not line.startswith("warning: ")]
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: checkpoint ")
        assert "weights_only" not in done.stderr and "Traceback" not in done.stderr


def test_models_lists_damaged_cached_weights(tmp_path):
    cache = tmp_path / "cache"
    (cache / "checkpoints").mkdir(parents=True)
    (cache / "checkpoints" / "sam_vit_b_01ec64.pth").write_bytes(b"half a download")
    done = run_cli("models", extra_env={"SAMSEGMENTER_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("sam_vit_b "))
    assert "DAMAGED, not usable" in line and "is truncated: 15 bytes" in line and "download sam_vit_b again" in line
    litemedsam = next(line for line in done.stdout.splitlines() if line.startswith("litemedsam "))
    assert litemedsam.endswith(str(litemedsam_checkpoint()))
