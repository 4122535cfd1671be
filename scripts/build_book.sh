#!/usr/bin/env bash
# Build the book: install what it needs, execute every chapter (outputs written back into
# chapters/*.ipynb), then build the HTML with warnings as errors into _build/html.
# Chapters run at the `book` scale unless PDEEOS_SCALE says otherwise; stored runs under results/
# are re-made with `python -m pdeeos run EXPERIMENT --scale book`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/python scripts/execute_chapters.py
rm -rf _build
.venv/bin/jupyter-book build . --warningiserror --nitpick --keep-going
echo "The book is in _build/html/index.html"
