"""The CMake files install every file of the Slicer module, and what they name exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "SAMSegmenter"


def cmake_arguments(text: str, command: str) -> list[list[str]]:
    """Arguments of every call of ``command`` (no nesting, comments removed)."""
    text = re.sub(r"#[^\n]*", "", text)
    return [call.split() for call in re.findall(rf"\b{command}\s*\(([^)]*)\)", text, flags=re.IGNORECASE)]


def module_files_listed() -> set[str]:
    text = (MODULE / "CMakeLists.txt").read_text()
    variables = {"MODULE_NAME": cmake_arguments(text, "set")[0][1]}
    listed: set[str] = set()
    for args in cmake_arguments(text, "file"):
        assert args[0] in ("GLOB", "GLOB_RECURSE")
        assert args[2:5] == ["RELATIVE", "${CMAKE_CURRENT_SOURCE_DIR}", "CONFIGURE_DEPENDS"]
        variables[args[1]] = " ".join(args[5:])
        for pattern in args[5:]:
            if args[0] == "GLOB_RECURSE":  # CMake matches the file name in the folder and all its subfolders
                folder, _, name = pattern.rpartition("/")
                pattern = f"{folder}/**/{name}"
            listed |= {str(p.relative_to(MODULE)) for p in MODULE.glob(pattern)}
    for args in cmake_arguments(text, "set"):
        if args[0] in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
            for entry in args[1:]:
                if entry.startswith("${MODULE_PACKAGE"):
                    continue
                listed.add(re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], entry))
    return listed


def module_files_on_disk() -> set[str]:
    """Files in the module folder that git tracks or would track (ignored build output excluded)."""
    output = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "."],
        cwd=MODULE,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    files = {line for line in output.splitlines() if line and (MODULE / line).is_file()}
    return {f for f in files if f != "CMakeLists.txt" and "__pycache__" not in f and not f.startswith(PIP_ONLY)}


PIP_ONLY = "SAMSegmenterWeb/"  # the web app: installed by pip, never by the Slicer extension


def test_every_module_file_is_installed_and_every_listed_file_exists():
    listed, on_disk = module_files_listed(), module_files_on_disk()
    assert {
        "SAMSegmenter.py",
        "SegmentEditorSAMLib/SegmentEditorEffect.py",
        "SAMSegmenterMRML/logic.py",
        "SAMSegmenterLib/models/loader.py",
        "SAMSegmenterLib/evaluation/evaluate.py",
    } <= listed
    assert sorted(on_disk - listed) == []
    assert sorted(f for f in listed if not (MODULE / f).is_file()) == []


def test_extension_metadata_and_subdirectories():
    text = (ROOT / "CMakeLists.txt").read_text()
    settings = {args[0]: " ".join(args[1:]) for args in cmake_arguments(text, "set")}
    for key in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ):
        assert settings.get(key), key
    assert settings["EXTENSION_CATEGORY"] == '"Segmentation"'
    for url_key, path in (
        ("EXTENSION_ICONURL", "Resources/SAMSegmenter.png"),
        ("EXTENSION_SCREENSHOTURLS", "Resources/Screenshot01.png"),
    ):
        assert settings[url_key].strip('"').endswith("/" + path)
        assert (ROOT / path).is_file()
    subdirectories = [args[0] for args in cmake_arguments(text, "add_subdirectory")]
    assert subdirectories == ["SAMSegmenter", "Testing/Slicer"]
    assert ["Slicer", "5.10", "REQUIRED"] in cmake_arguments(text, "find_package")
    testing = (ROOT / "Testing" / "Slicer" / "CMakeLists.txt").read_text()
    for args in cmake_arguments(testing, "slicer_add_python_unittest"):
        scripts = [a for a in args if a.endswith(".py")]
        assert scripts and all((ROOT / "Testing" / "Slicer" / s).is_file() for s in scripts)


def test_the_self_test_is_a_ctest_that_is_not_installed_and_reports_skips():
    """Under BUILD_TESTING the self-test is only a Python unittest run by Slicer (a scripted module would be installed
    and shipped in the extension package), and ctest reports it skipped when unittest skips it."""
    testing = (ROOT / "Testing" / "Slicer" / "CMakeLists.txt").read_text()
    assert cmake_arguments(testing, "slicerMacroBuildScriptedModule") == []
    assert cmake_arguments(testing, "slicer_add_python_unittest") == [["SCRIPT", "SAMSegmenterSelfTest.py"]]
    (properties,) = cmake_arguments(testing, "set_tests_properties")
    assert properties[:3] == ["py_SAMSegmenterSelfTest", "PROPERTIES", "SKIP_REGULAR_EXPRESSION"]
    quoted = re.search(r'SKIP_REGULAR_EXPRESSION\s+"((?:[^"\\]|\\.)*)"', testing).group(1)
    pattern = re.sub(r"\\(.)", r"\1", quoted)  # CMake string escapes -> the regular expression ctest gets
    skipped = "test_effect_end_to_end (SAMSegmenterSelfTest.SAMSegmenterSelfTest.test_effect_end_to_end) ... " \
              "skipped 'x'"
    assert re.search(pattern, skipped) and not re.search(pattern, skipped.replace("skipped 'x'", "ok"))
    root = (ROOT / "CMakeLists.txt").read_text()
    assert "if(BUILD_TESTING)\n  add_subdirectory(Testing/Slicer)\nendif()" in root


def test_effect_source_follows_slicers_loading_rules():
    """setPythonSource loads <folder>/<File>.py as module <folder> and instantiates its class <File>."""
    effect = MODULE / "SegmentEditorSAMLib" / "SegmentEditorEffect.py"
    source = effect.read_text()
    assert "class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):" in source
    assert 'scriptedEffect.name = "SAM"' in source
    assert '"SegmentEditorSAMLib", "SegmentEditorEffect.py"' in (MODULE / "SAMSegmenter.py").read_text()
    assert (MODULE / "Resources" / "Icons" / "SegmentEditorSAM.png").is_file()
