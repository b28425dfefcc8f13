"""The extension description (ExtensionsIndex/SAMSegmenter.json) and the top-level CMakeLists.txt against the rules
the Slicer Extensions Index checks on a submission (scripts/check_description_files.py in Slicer/ExtensionsIndex,
read 2026-08; the JSON schema is Slicer's slicer-extension-catalog-entry-schema-v1.0.2.json). Checks that need the
network there (the schema download, the icon's Content-Type, the repository's GitHub topics) are replaced by
their offline equivalents: the schema's rules written out here, and the files the URLs name in this repository.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTION = ROOT / "ExtensionsIndex" / "SAMSegmenter.json"
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
# schema v1.0.2: its properties and their JSON types, and the required ones ("additionalProperties": false)
SCHEMA_PROPERTIES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                     "build_dependencies": list, "dicom_support_rule": str, "build_subdirectory": str,
                     "enabled": bool, "tier": int}
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")  # the index's rule
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
REPOSITORY_LIMIT_MB = 100


def description() -> dict:
    return json.loads(DESCRIPTION.read_text(encoding="utf-8"))


def cmake_literal(name: str) -> str:
    """The quoted value of ``set(NAME "...")`` in the top-level CMakeLists.txt, read as raw text like the index."""
    found = re.findall(rf'set\s*\({name}\s*"([^"]+)"[ ]*\)', (ROOT / "CMakeLists.txt").read_text(), re.IGNORECASE)
    assert found, f"no literal set({name} \"...\") in CMakeLists.txt"
    return found[0].strip()


def test_the_description_follows_schema_1_0_2_and_is_lf_only():
    raw = DESCRIPTION.read_bytes()
    assert b"\r" not in raw
    data = description()
    assert data["$schema"] == SCHEMA_URL
    assert SCHEMA_REQUIRED <= set(data) <= set(SCHEMA_PROPERTIES), set(data) - set(SCHEMA_PROPERTIES)
    for key, value in data.items():
        assert type(value) is SCHEMA_PROPERTIES[key], key  # (bool is not accepted as an integer tier)
    assert all(isinstance(item, str) for item in data["build_dependencies"])
    assert 1 <= data["tier"] <= 5 and data.get("scm_type", "git") in ("git", "local")


def test_category_name_repository_and_dependencies():
    data = description()
    assert data["category"] == "Segmentation" == cmake_literal("EXTENSION_CATEGORY")  # a category the index lists
    name = DESCRIPTION.stem
    assert not name.lower().startswith("slicer")  # the extension's name must not start with "Slicer"...
    url = urllib.parse.urlsplit(data["scm_url"])
    assert url.scheme in ("git", "https") and "://" in data["scm_url"]
    repository = Path(url.path.strip("/")).stem
    assert repository.startswith(REPOSITORY_PREFIXES), repository  # ...the repository's must
    assert data["scm_revision"]
    assert data["build_dependencies"] == ["PyTorch"] == cmake_literal("EXTENSION_DEPENDS").split()
    project = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", (ROOT / "CMakeLists.txt").read_text(), re.IGNORECASE)
    assert project[0].strip("\"'") == name  # the first project() names the extension


def test_icon_and_screenshot_urls_are_literal_and_name_images_of_this_repository():
    data = description()
    owner_repo = urllib.parse.urlsplit(data["scm_url"]).path.strip("/").removesuffix(".git")
    homepage = cmake_literal("EXTENSION_HOMEPAGE")
    assert homepage.rstrip("/") == data["scm_url"].rstrip("/").removesuffix(".git")
    urls = [cmake_literal("EXTENSION_ICONURL")] + cmake_literal("EXTENSION_SCREENSHOTURLS").split()
    for url in urls:
        assert "${" not in url and url.startswith("http") and url.lower().endswith(IMAGE_SUFFIXES), url
        prefix = f"https://raw.githubusercontent.com/{owner_repo}/{data['scm_revision']}/"
        assert url.startswith(prefix), url  # served as image/png, from the revision the index builds
        image = ROOT / url.removeprefix(prefix)
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image


def test_license_and_repository_size():
    assert any((ROOT / name).is_file() for name in ("LICENSE", "LICENCE", "License.txt", "license.txt",
                                                    "LICENSE.txt", "COPYING", "COPYING.txt"))
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = [ROOT / name for name in tracked.decode().split("\0") if name]
    size = sum(path.stat().st_size for path in files if path.is_file())
    assert size / 2**20 < REPOSITORY_LIMIT_MB
