#!/usr/bin/env bash
# Every test: the package's unit tests, nbval over every chapter (re-executed at the `ci` scale and
# compared with the committed outputs), a build of the book with warnings as errors, and the rendered
# book checked page by page in headless Chromium. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
rm -rf _build
.venv/bin/jupyter-book build . --warningiserror --nitpick --keep-going --quiet
export PDEEOS_SCALE=ci
.venv/bin/python -m pytest tests chapters --nbval -p no:cacheprovider --durations=15
