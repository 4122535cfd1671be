#!/usr/bin/env bash
# Install everything the book and the tests need into .venv/ (and MathJax into _vendor/mathjax).
# Safe to re-run: it only adds what is missing. Torch first, pinned, so pip never pulls a CUDA build
# on a machine that has a local CPU wheel; on Colab or a GPU workstation the existing torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${PIP[@]}" "torch==${TORCH_VERSION:-2.13.0}" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import torch" # fail here, with pip's message above, if torch did not install
fi
"${PIP[@]}" -e ".[test,book]" selenium 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import pdeeos, jupyter_book, nbval, selenium"

# MathJax 3, served from the built book so math typesets offline.
if [ ! -f _vendor/mathjax/tex-chtml.js ]; then
  npm install --silent --no-audit --no-fund --prefix .build-tools mathjax@3 >/dev/null
  mkdir -p _vendor/mathjax
  cp -r .build-tools/node_modules/mathjax/es5/. _vendor/mathjax/
fi
