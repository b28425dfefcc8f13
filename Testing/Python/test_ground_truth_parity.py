"""The ground-truth parity rule: its arithmetic on known numbers, its case set, a small real run, the record."""

from __future__ import annotations

import numpy as np
import pytest

from SAMSegmenterLib.evaluation import ground_truth
from SAMSegmenterLib.io import read_volume
from SAMSegmenterLib.models import ground_truth_parity as rule
from SAMSegmenterLib.models.registry import BACKENDS

# 21 reference Dice values 0.80, 0.81, ..., 1.00: mean 0.90, and the 5th percentile sits exactly on the
# second value (linear interpolation at position 0.05 * 20 = 1), 0.81.
REFERENCE = [0.80 + 0.01 * n for n in range(21)]


def test_statistics_of_known_values():
    verdict = rule.judge("x", REFERENCE, REFERENCE)
    assert verdict.rows == 21 and verdict.mean == pytest.approx(0.90) and verdict.p5 == pytest.approx(0.81)
    assert verdict.mean_delta == 0 and verdict.p5_delta == 0 and verdict.passed


@pytest.mark.parametrize("shift, passes", [(-0.004, True), (-0.006, False), (0.02, True)])
def test_uniform_shift_is_judged_by_the_mean(shift, passes):
    verdict = rule.judge("x", REFERENCE, [d + shift for d in REFERENCE])
    assert verdict.mean_delta == pytest.approx(shift) and verdict.p5_delta == pytest.approx(shift)
    assert verdict.passed is passes


def test_a_worse_tail_fails_the_percentile_even_with_a_good_mean():
    """Two boxes 0.05 worse: the mean moves by 0.1 / 21 = 0.0048 (inside 0.005), the 5th percentile by 0.05."""
    candidate = [d - 0.05 if n < 2 else d for n, d in enumerate(REFERENCE)]
    verdict = rule.judge("x", REFERENCE, candidate)
    assert verdict.mean_delta == pytest.approx(-0.1 / 21) and verdict.mean_delta > -rule.MEAN_TOLERANCE
    assert verdict.p5 == pytest.approx(0.76) and verdict.p5_delta == pytest.approx(-0.05)
    assert not verdict.passed and "fails" in verdict.summary()


def test_flips_that_cancel_out_pass():
    """Masks that change without getting worse on the whole (one box better, one worse) pass the rule,
    although mask parity with float32 would fail them."""
    candidate = list(REFERENCE)
    candidate[10], candidate[12] = candidate[10] - 0.05, candidate[12] + 0.05
    assert rule.judge("x", REFERENCE, candidate).passed


@pytest.mark.parametrize("reference, candidate", [([0.5, 0.6], [0.5]), ([], []), ([0.5, np.nan], [0.5, 0.5])])
def test_bad_input_is_refused(reference, candidate):
    with pytest.raises(ValueError):
        rule.judge("x", reference, candidate)


def test_recorded_verdicts_are_consistent():
    """Every record names a lower-precision backend and one CPU; a backend passes only when it passed on every CPU
    measured."""
    assert set(rule.LOWER_PRECISION) <= set(BACKENDS)
    for backend, records in rule.RECORDED.items():
        assert records and len({r.machine for r in records}) == len(records)  # one record per CPU
        for record in records:
            verdict = record.verdict
            assert backend == verdict.backend and backend in rule.LOWER_PRECISION
            assert verdict.rows > 100 and record.date and record.machine
        assert (rule.passed(backend) == records) == all(r.verdict.passed for r in records)
        assert rule.passed(backend) in ((), records)


def test_ct_structures_on_the_real_slice(ct_small):
    """Body above the canal above the arch (rows grow downwards in this slice), each a real region."""
    volume, _ = ct_small
    labels = ground_truth.ct_structures(volume[0])
    rows = {value: np.nonzero(labels == value)[0] for value in ground_truth.CT_STRUCTURES}
    assert all(len(r) >= 4 * ground_truth.MIN_PIXELS for r in rows.values()), {v: len(r) for v, r in rows.items()}
    assert rows[1].mean() < rows[3].mean() < rows[2].mean()
    assert rows[3].min() >= rows[1].max() - 5 and rows[3].max() <= rows[2].min() + 5
    assert volume[0][labels == 3].mean() < 100 < volume[0][labels == 2].mean()  # soft canal, bony arch


@pytest.mark.slow
def test_small_real_run_of_the_rule(tmp_path):
    """The rule through evaluate_case on real slices (the posterior fossa on a few axial MNI152 slices, the
    CT structures): a float32 backend with the reference's masks has the reference's Dice row for row and
    passes."""
    cases = ground_truth.write_case_set(tmp_path, step=16, structures=("posterior_fossa",), axes=(0,))
    assert [c.case.name for c in cases] == ["mni152 posterior_fossa K", "ct_small"]
    label, _ = read_volume(tmp_path / "mni152_posterior_fossa_K.nii.gz")
    kept = np.flatnonzero(label.sum(axis=(1, 2)))
    assert len(kept) >= 2 and all(k % 16 == 0 for k in kept)  # only slices whose index the step divides
    verdicts, rows = ground_truth.run_rule(["fused"], cases, reference="torch")
    assert len(rows["torch"]) == len(rows["fused"]) == 2 * (len(kept) + 3)
    assert {r["protocol"] for r in rows["torch"]} == set(rule.PROTOCOLS)
    assert {r["selection"] for r in rows["torch"]} == {rule.SELECTION}
    verdict = verdicts["fused"]
    assert verdict.passed and abs(verdict.mean_delta) < 1e-3 and abs(verdict.p5_delta) < 1e-3
    assert 0.3 < verdict.reference_mean < 1.0
