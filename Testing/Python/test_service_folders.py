"""A local service's private folder (access token, ready file, log) does not outlive its process: removed when
the service is dropped unstarted, and, after the process was killed, by the next local service of the user."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest
from conftest import MODULE_DIR

from SAMSegmenterLib.service import local_folders
from SAMSegmenterLib.service.client import LocalService

posix = pytest.mark.skipif(os.name != "posix", reason="stale folders are found through flock (POSIX)")

MAKE_FOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from SAMSegmenterLib.service.client import LocalService
service = LocalService()
print(service.folder, flush=True)
time.sleep(120)
"""


def test_an_unstarted_local_service_leaves_no_folder():
    service = LocalService()
    folder = service.folder
    assert folder.name.startswith(local_folders.PREFIX)
    assert (folder / local_folders.OWNER).read_text() == str(os.getpid())
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700) or os.name != "posix"
    del service
    gc.collect()
    assert not folder.exists()


@posix
def test_the_folder_of_a_killed_process_is_removed_and_live_ones_are_kept(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))  # the child's temporary folder
    killed = subprocess.Popen([sys.executable, "-c", MAKE_FOLDER, str(MODULE_DIR)], stdout=subprocess.PIPE,
                              text=True, env=env)
    living = subprocess.Popen([sys.executable, "-c", MAKE_FOLDER, str(MODULE_DIR)], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        dead_folder = tmp_path / os.path.basename(killed.stdout.readline().strip())
        live_folder = tmp_path / os.path.basename(living.stdout.readline().strip())
        assert dead_folder.name.startswith(local_folders.PREFIX) and live_folder.name.startswith(local_folders.PREFIX)
        killed.kill()  # SIGKILL: no atexit handler, no finalizer runs
        killed.wait(30)
        assert dead_folder.is_dir()  # what a killed Slicer left behind
        unowned = tmp_path / (local_folders.PREFIX + "being-made")  # no owner file yet: left alone
        unowned.mkdir()
        other = tmp_path / "samsegmenter-web-1"
        other.mkdir()

        # the next local service of the user (here: a process that makes one and exits) removes it
        subprocess.run([sys.executable, "-c", MAKE_FOLDER.replace("time.sleep(120)", ""), str(MODULE_DIR)],
                       env=env, check=True, timeout=120, stdout=subprocess.DEVNULL)
        assert not dead_folder.exists()
        assert sorted(tmp_path.iterdir()) == sorted([live_folder, unowned, other])  # its own went at its exit
        assert local_folders.remove_stale(tmp_path) == []
    finally:
        living.kill()
        living.wait(30)
        killed.wait(30)


@posix
def test_a_claim_that_fails_releases_its_lock(tmp_path):
    folder = tmp_path / (local_folders.PREFIX + "x")
    (folder / local_folders.OWNER / "in-the-way").mkdir(parents=True)  # the owner file cannot take its name
    with pytest.raises(OSError) as failure:
        local_folders.claim(folder)
    # the failed claim's file is not held, even while its traceback (which keeps the claim's frame) lives on
    with open(folder / (local_folders.OWNER + ".new"), "rb") as other:
        local_folders.fcntl.flock(other.fileno(), local_folders.fcntl.LOCK_EX | local_folders.fcntl.LOCK_NB)
    assert failure.traceback
