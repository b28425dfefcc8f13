"""Ground-truth parity: may a lower-precision encoder stand in for float32? Judged against ground truth.

Mask parity (every probe mask within Dice 0.99 of the float32 mask, :mod:`backends`)
punishes a bf16 encoder for flipping between two plausible masks of an ambiguous box,
which may be equally right. What users care about is accuracy against the truth, so a
lower-precision backend (:data:`LOWER_PRECISION`) is judged by this rule instead:

    Run :mod:`evaluation.evaluate` with the ``box`` and ``box_jitter`` protocols (tight
    box, and each side moved out by 0-20 px) on :data:`evaluation.ground_truth.CASE_SET`
    (MNI152 structures along the K, J and I axes, and CT structures), single-mask output,
    once with the float32 reference and once with the candidate, same prompts. The
    candidate passes when, over all rows,

        mean Dice      >= mean Dice of float32          - MEAN_TOLERANCE (0.005)
        5th percentile >= 5th percentile of float32     - P5_TOLERANCE   (0.01)

    (percentiles by numpy's linear interpolation; Dice against the reference masks).

Running it takes minutes (hundreds of slices), too long for the automatic choice at
first model load. So the rule is run offline (``benchmarks/speed.py`` runs it for every
backend) and its verdicts are recorded in :data:`RECORDED` with the machine and date, one
record per CPU measured; :func:`backends.candidates` offers a lower-precision backend to
``auto`` only when every recorded verdict passed (and the CPU runs its precision natively),
and the choice's reason says so. ``docs/speed.md`` holds the runs behind the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

MEAN_TOLERANCE = 0.005
P5_TOLERANCE = 0.01
PERCENTILE = 5.0
PROTOCOLS = ("box", "box_jitter")
SELECTION = "single"
LOWER_PRECISION = ("fused-mixed", "fused-bf16", "openvino-bf16")
"""Backends whose numbers differ from float32 by more than rounding: judged by this rule."""


@dataclass(frozen=True)
class Verdict:
    """The rule applied to one candidate: Dice statistics of both runs over the same ``rows``."""

    backend: str
    rows: int
    mean: float
    p5: float
    reference_mean: float
    reference_p5: float

    @property
    def mean_delta(self) -> float:
        """Candidate mean Dice minus the float32 mean (negative: less accurate)."""
        return self.mean - self.reference_mean

    @property
    def p5_delta(self) -> float:
        """Candidate 5th percentile minus the float32 5th percentile."""
        return self.p5 - self.reference_p5

    @property
    def passed(self) -> bool:
        return self.mean_delta >= -MEAN_TOLERANCE and self.p5_delta >= -P5_TOLERANCE

    def summary(self) -> str:
        """One line: the deltas, the limits and the outcome."""
        return (f"{'passes' if self.passed else 'fails'} the ground-truth rule on {self.rows} boxes: mean Dice "
                f"{self.mean_delta:+.4f} (limit -{MEAN_TOLERANCE}), 5th percentile {self.p5_delta:+.4f} "
                f"(limit -{P5_TOLERANCE}) vs float32")


def judge(backend: str, reference_dice: Sequence[float], candidate_dice: Sequence[float]) -> Verdict:
    """Apply the rule to paired per-row Dice values against the ground truth (row n of both runs is the
    same slice and prompt): ``reference_dice`` from the float32 run, ``candidate_dice`` from the candidate's.

    Raises ValueError for unpaired, empty or non-finite input.
    """
    ref = np.asarray(reference_dice, dtype=float)
    cand = np.asarray(candidate_dice, dtype=float)
    if ref.shape != cand.shape or ref.ndim != 1 or not len(ref):
        raise ValueError(f"the rule needs the same non-zero number of rows from both runs, got {ref.shape} "
                         f"and {cand.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(cand).all()):
        raise ValueError("Dice values must be finite")
    return Verdict(backend, len(ref), float(cand.mean()), float(np.percentile(cand, PERCENTILE)),
                   float(ref.mean()), float(np.percentile(ref, PERCENTILE)))


@dataclass(frozen=True)
class Recorded:
    """A verdict from an offline run of the full rule, with where and when it was measured."""

    verdict: Verdict
    date: str
    machine: str
    note: str = ""


_EMERALD_RAPIDS = "Intel Xeon (Emerald Rapids: AMX, AVX512-BF16), 2 cores, native bf16"
_ZEN4 = "AMD EPYC (Zen 4: AVX512-BF16, no AMX), 2 cores, native bf16"
_FLOAT32_RUN = (0.584831304434618, 0.286511862760137)  # mean and 5th percentile of the float32 reference's rows
_FLOAT32_RUN_ZEN4 = (0.5848311685791597, 0.286511862760137)

RECORDED: dict[str, tuple[Recorded, ...]] = {
    "fused-mixed": (
        Recorded(Verdict("fused-mixed", 360, 0.5812399763815705, 0.2980742368069307, *_FLOAT32_RUN),
                 "2026-12-07", _EMERALD_RAPIDS, "with the local depth-wise convolutions and patch merges in bf16 too"),
        Recorded(Verdict("fused-mixed", 360, 0.5811445535037049, 0.29342712634445717, *_FLOAT32_RUN_ZEN4),
                 "2026-12-08", _ZEN4),
    ),
    "fused-bf16": (
        Recorded(Verdict("fused-bf16", 360, 0.5732540958866524, 0.2766176178257254, *_FLOAT32_RUN),
                 "2026-12-07", _EMERALD_RAPIDS),
        Recorded(Verdict("fused-bf16", 360, 0.5732111881138208, 0.2751905642340906, *_FLOAT32_RUN_ZEN4),
                 "2026-12-08", _ZEN4),
    ),
    "openvino-bf16": (
        Recorded(Verdict("openvino-bf16", 360, 0.5750937400221535, 0.28045515394912984, *_FLOAT32_RUN),
                 "2026-12-07", _EMERALD_RAPIDS),
        Recorded(Verdict("openvino-bf16", 360, 0.5753321796976887, 0.2826065950456096, *_FLOAT32_RUN_ZEN4),
                 "2026-12-08", _ZEN4),
    ),
}
"""Verdicts of full runs of the rule (``python benchmarks/speed.py --stages ground_truth``), by backend, one
record per CPU measured: the full case set (16 cases, 360 boxes) on CPUs with native bf16, docs/speed.md. Only
``fused-mixed`` passed, on both CPUs (mean -0.0036 and -0.0037); ``fused-bf16`` and ``openvino-bf16`` lost
about 0.01 mean Dice (limit 0.005) on both. The Intel record of ``fused-mixed`` is from a later run of its
present layer set."""


def passed(backend: str) -> tuple[Recorded, ...]:
    """The recorded runs of ``backend`` when every one of them passed the rule (a failure on any CPU measured
    withdraws it); empty when it was never run or failed somewhere."""
    records = RECORDED.get(backend, ())
    return records if records and all(r.verdict.passed for r in records) else ()
