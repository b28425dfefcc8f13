"""The encoder gate with the real LiteMedSAM: one encode at a time, each slice once, prompts first.

Assertions are about the order of events, never about durations.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from SAMSegmenterLib import child_env
from SAMSegmenterLib.models import load_model
from SAMSegmenterLib.models.encoder_gate import JOB, PROMPT, Lane, gate_for, priority
from SAMSegmenterLib.predictor import SlicePredictor
from SAMSegmenterLib.prompts import Prompt

BACKENDS = ["torch", "onnxruntime"]  # torch modules stop at forward pre-hooks; ONNX Runtime through cancel()


class Recorder(SlicePredictor):
    """A predictor that logs ("start"/"end", slice) around every real encode."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events: list[tuple[str, int]] = []
        self.started = threading.Event()

    def _compute(self, axis, index):
        self.events.append(("start", index))
        self.started.set()
        try:
            embedding = super()._compute(axis, index)
        except BaseException:
            self.events.append(("stopped", index))
            raise
        self.events.append(("end", index))
        return embedding


@pytest.fixture(scope="module", params=BACKENDS)
def model(request):
    if request.param == "onnxruntime":
        pytest.importorskip("onnxruntime")
    return load_model("litemedsam", device="cpu", backend=request.param)


@pytest.fixture
def volume(mni152):
    return mni152[0][80:86]


def test_threads_asking_for_one_slice_compute_it_once(model, volume):
    predictor = Recorder(model, volume)
    results = []
    threads = [threading.Thread(target=lambda: results.append(predictor.embedding(0, 2))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert predictor.encoder_calls == 1 and predictor.events == [("start", 2), ("end", 2)]
    assert len(results) == 4 and all(r is results[0] for r in results)


def test_one_encode_at_a_time(model, volume):
    predictor = Recorder(model, volume)
    threads = [threading.Thread(target=predictor.embedding, args=(0, index)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kinds = [kind for kind, _ in predictor.events]
    assert kinds == ["start", "end"] * 3  # never two starts in a row


def test_a_prompt_preempts_a_prefetch_of_another_slice(model, volume):
    predictor = Recorder(model, volume)
    gate = gate_for(model)
    before = gate.preemptions
    predictor.prefetch(0, 1)
    assert predictor.started.wait(60)
    predictor.embedding(0, 4)  # a prompt on another slice
    assert gate.wait_idle(120)
    assert gate.preemptions == before + 1
    events = predictor.events
    assert events[0] == ("start", 1) and ("stopped", 1) in events
    assert events.index(("end", 4)) < events.index(("end", 1))  # the prompt did not wait for the guess
    assert predictor.is_cached(0, 1) and predictor.is_cached(0, 4)  # the prefetch was retried afterwards


def test_a_prompt_for_the_prefetched_slice_waits_for_it(model, volume):
    predictor = Recorder(model, volume)
    gate = gate_for(model)
    before = gate.preemptions
    predictor.prefetch(0, 3)
    assert predictor.started.wait(60)
    embedding = predictor.embedding(0, 3)
    assert gate.preemptions == before and predictor.events == [("start", 3), ("end", 3)]
    assert embedding is predictor.cache.get(predictor._key(0, 3))


def test_prompts_go_before_waiting_jobs(model, volume):
    """With one encode running, a job and then a prompt queue up: the prompt runs first."""
    predictor = Recorder(model, volume)
    first = threading.Thread(target=predictor.embedding, args=(0, 0))
    first.start()
    assert predictor.started.wait(60)

    def job():
        with priority(JOB):
            predictor.embedding(0, 1)

    queued = threading.Thread(target=job)
    queued.start()
    gate = gate_for(model)
    deadline = time.monotonic() + 60
    while not gate._waiting and time.monotonic() < deadline:  # the job is queued behind the running encode
        time.sleep(0.001)
    assert gate._waiting
    with priority(PROMPT):
        predictor.embedding(0, 2)
    for thread in (first, queued):
        thread.join()
    starts = [index for kind, index in predictor.events if kind == "start"]
    assert starts == [0, 2, 1]


def test_gate_results_equal_direct_encodes(model, volume):
    predictor = SlicePredictor(model, volume)
    direct = model.encode(predictor.slice_image(0, 5)).features
    np.testing.assert_array_equal(predictor.embedding(0, 5).features.numpy(), direct.numpy())


def test_a_lane_runs_calls_on_its_thread_and_hands_back_errors():
    lane = Lane("test-lane")
    assert lane.call(lambda: threading.current_thread().name) == "test-lane"
    with pytest.raises(ZeroDivisionError):
        lane.call(lambda: 1 / 0)
    assert lane.call(lambda: 7) == 7  # an error does not stop the lane


# a child script's predictor sets ``started`` when its first real encode begins; ``encoding``: the slices being encoded
STARTED_HOOK = """
started, encoding = threading.Event(), []
real_compute = predictor._compute
def compute(axis, index):
    started.set()
    encoding.append(index)
    try:
        return real_compute(axis, index)
    finally:
        encoding.remove(index)
predictor._compute = compute
"""

MODEL_THREAD_SCRIPT = """
import json, sys, threading
import numpy as np
from SAMSegmenterLib.io.sample_data import load_sample
from SAMSegmenterLib.models import encoder_gate, load_model
from SAMSegmenterLib.predictor import SlicePredictor
from SAMSegmenterLib.prompts import Prompt

encoder_gate.use_model_thread()
seen = set()
model = encoder_gate.on_model_thread(lambda: load_model("litemedsam", device="cpu", backend="torch"))
for name in ("encode", "decode_candidates"):
    real = getattr(model, name)
    def recorded(*args, real=real, name=name, **kwargs):
        seen.add((name, threading.current_thread().name))
        return real(*args, **kwargs)
    setattr(model, name, recorded)
predictor = SlicePredictor(model, load_sample("mni152")[0][80:83])
""" + STARTED_HOOK + """predictor.prefetch(0, 2)
assert started.wait(60)
masks = {}
def ask(n):
    masks[n] = predictor.predict(0, n % 2, Prompt(box=(50, 60, 150, 170))).mask
threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
assert predictor.gate.wait_idle(120)
np.save(sys.argv[1], np.stack([masks[0], masks[1]]))
print(json.dumps({"seen": sorted(seen), "preemptions": predictor.gate.preemptions,
                  "same": bool((masks[0] == masks[2]).all() and (masks[1] == masks[3]).all())}))
"""


def test_with_the_model_thread_all_model_work_runs_there(tmp_path, mni152):
    """The service's mode (a separate process: the switch is process-wide): encodes and decodes asked from
    four threads and a prefetch run on the one model thread, the prompt still preempts the prefetch, and the
    masks are those of the calling-thread mode."""
    out = tmp_path / "masks.npy"
    done = subprocess.run([sys.executable, "-c", MODEL_THREAD_SCRIPT, str(out)], capture_output=True, text=True,
                          timeout=600, env=child_env())
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["seen"] == [["decode_candidates", "sam-model"], ["encode", "sam-model"]]
    assert report["preemptions"] >= 1 and report["same"]
    predictor = SlicePredictor(load_model("litemedsam", device="cpu", backend="torch"), mni152[0][80:83])
    expected = [predictor.predict(0, n, Prompt(box=(50, 60, 150, 170))).mask for n in (0, 1)]
    np.testing.assert_array_equal(np.load(out), np.stack(expected))


EXIT_SCRIPT = """
import sys, threading, time
from SAMSegmenterLib.io.sample_data import load_sample
from SAMSegmenterLib.models import encoder_gate, load_model
from SAMSegmenterLib.predictor import SlicePredictor

backend, lane = sys.argv[1], sys.argv[2] == "lane"
if lane:
    encoder_gate.use_model_thread()
model = encoder_gate.on_model_thread(lambda: load_model("litemedsam", device="cpu", backend=backend))
predictor = SlicePredictor(model, load_sample("mni152")[0][60:66])
""" + STARTED_HOOK + """for index in range(6):
    predictor.prefetch(0, index)
assert started.wait(60)
time.sleep(0.2)  # inside the encoder's native code
print("exiting while a prefetch encodes" if encoding else "no encode running at exit", flush=True)
"""


@pytest.mark.parametrize("backend", ["torch", "openvino"])
@pytest.mark.parametrize("thread", ["caller", "lane"])
def test_a_process_exiting_while_a_prefetch_encodes_exits_cleanly(backend, thread):
    """A prefetch (a daemon thread) killed inside native code at interpreter exit aborted the process (exit code
    134, "terminate called without an active exception"); the exit now stops it first, with or without the
    service's model thread."""
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, backend, thread], capture_output=True, text=True,
                          timeout=600, env=child_env())
    assert "exiting while a prefetch encodes" in done.stdout, done.stderr[-3000:]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "terminate called" not in done.stderr
