#!/usr/bin/env bash
# Draws the PNGs in docs/bench/ from a compare run and a scale report (see bench/plot.py).
# usage: bench/plot.sh COMPARE_OUT_DIR SCALE_JSON [PNG_DIR]
# matplotlib is installed from PyPI into a private venv ($PLOT_VENV, default /var/tmp/steadfast-plot).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${PLOT_VENV:-/var/tmp/steadfast-plot}"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import matplotlib' 2>/dev/null || "$VENV/bin/pip" install -q 'matplotlib==3.10.*'
"$VENV/bin/python" "$REPO/bench/plot.py" "$1" "$2" "${3:-$REPO/docs/bench}"
