#!/usr/bin/env bash
# Install lepton-hls with its [board] extra onto a stock PYNQ image (v3.0.x), keeping the image's own pynq.
#
#   sudo ./install.sh [--dry-run] [PACKAGE_DIR ...]
#
# - pip-installs lepton-hls[board] (from this checkout, or the wheel in LEPTON_WHEEL) into the Python environment
#   that runs PYNQ's Jupyter (the pynq venv on v3 images). The image's pynq and numpy are pinned to the versions
#   installed: pip adds what the board side needs around them and never replaces them (it stops with a conflict
#   instead). Without a pynq (off-board), the [board] extra brings one;
# - copies the quick-start notebook to ~xilinx/jupyter_notebooks/lepton-hls/;
# - copies any overlay package directories given (built on a workstation with `lepton-hls build`) to
#   ~xilinx/lepton/packages/ and checks their sha256s on the board.
# --dry-run: say what pip would install into that environment and change nothing.
#
# pip reads its package index as configured for that Python; for a board without network, give it a folder of
# wheels: LEPTON_PIP_ARGS="--no-index --find-links /path/to/wheels".
# Overrides for other layouts (and for testing off-board): LEPTON_PYTHON, LEPTON_WHEEL, LEPTON_PIP_ARGS,
# LEPTON_NOTEBOOK_DIR, LEPTON_PACKAGE_DIR.
set -euo pipefail

DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then
    DRY_RUN=1
    shift
fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SOURCE="${LEPTON_WHEEL:-$(dirname "$HERE")}"
if [ -z "${LEPTON_WHEEL:-}" ] && [ ! -f "$SOURCE/pyproject.toml" ]; then
    echo "install.sh: $SOURCE is not a lepton-hls checkout; run it from a checkout's host/ directory or set" \
         "LEPTON_WHEEL to a lepton-hls wheel" >&2
    exit 1
fi
[ -e "$SOURCE" ] || { echo "install.sh: LEPTON_WHEEL=$SOURCE not found" >&2; exit 1; }

if [ -z "${LEPTON_PYTHON:-}" ]; then
    if [ -f /etc/profile.d/pynq_venv.sh ]; then
        # shellcheck disable=SC1091
        source /etc/profile.d/pynq_venv.sh
    fi
    LEPTON_PYTHON="$(command -v python3)"
fi
PY="$LEPTON_PYTHON"

"$PY" - <<'PYCHECK' || { echo "install.sh: $PY lacks numpy or pip; is this a PYNQ image?" >&2; exit 1; }
import numpy, pip
PYCHECK

installed_version() {
    "$PY" -c "
import importlib.metadata as md, sys
try:
    print(md.version(sys.argv[1]))
except md.PackageNotFoundError:
    pass" "$1"
}

PYNQ_VERSION="$(installed_version pynq)"
NUMPY_VERSION="$(installed_version numpy)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "numpy==$NUMPY_VERSION" > "$WORK/keep.txt"
if [ -n "$PYNQ_VERSION" ]; then
    echo "pynq==$PYNQ_VERSION" >> "$WORK/keep.txt"
    echo "keeping the image's pynq $PYNQ_VERSION and numpy $NUMPY_VERSION"
else
    echo "install.sh: warning: no pynq installed for $PY; the [board] extra installs one (fine off-board;" \
         "on a board, run this with the image's pynq environment)" >&2
fi

PIP=("$PY" -m pip install --constraint "$WORK/keep.txt")
# shellcheck disable=SC2206  # LEPTON_PIP_ARGS is a list of pip options, split on spaces
[ -n "${LEPTON_PIP_ARGS:-}" ] && PIP+=(${LEPTON_PIP_ARGS})
if [ "$DRY_RUN" = 1 ]; then
    "${PIP[@]}" --dry-run "$SOURCE[board]"
    exit 0
fi
"${PIP[@]}" "$SOURCE[board]"

if [ -n "$PYNQ_VERSION" ] && [ "$(installed_version pynq)" != "$PYNQ_VERSION" ]; then
    echo "install.sh: pynq changed from $PYNQ_VERSION to $(installed_version pynq); restore the image's" >&2
    exit 1
fi

HOME_X="$(getent passwd xilinx 2>/dev/null | cut -d: -f6 || true)"
HOME_X="${HOME_X:-$HOME}"
NB_DIR="${LEPTON_NOTEBOOK_DIR:-$HOME_X/jupyter_notebooks/lepton-hls}"
PKG_DIR="${LEPTON_PACKAGE_DIR:-$HOME_X/lepton/packages}"

mkdir -p "$NB_DIR" "$PKG_DIR"
cp "$HERE"/notebooks/*.ipynb "$NB_DIR/"

for pkg in "$@"; do
    name="$(basename "$pkg")"
    rm -rf "${PKG_DIR:?}/$name"
    cp -r "$pkg" "$PKG_DIR/$name"
    "$PY" -c "
import sys
from lepton_host.manifest import load_manifest
m = load_manifest(sys.argv[1])
print(f'package {m.model.name}: {len(m.artifacts)} artifacts verified')" "$PKG_DIR/$name"
done

if [ -n "${SUDO_USER:-}" ] && id xilinx >/dev/null 2>&1; then
    chown -R xilinx:xilinx "$NB_DIR" "$PKG_DIR" 2>/dev/null || true
fi

# From outside the checkout, so that the installed copy is the one imported.
(cd "$WORK" && "$PY" -c "
import sys
import lepton_host, lepton_host.runtime, lepton_host.packing, lepton_host.backends
heavy = sorted(m for m in ('tensorflow', 'hls4ml', 'da4ml', 'lepton_hls') if m in sys.modules)
assert not heavy, f'the board side imported {heavy}'
print('lepton_host installed in', lepton_host.__path__[0])")
(cd "$WORK" && "$PY" -m lepton_hls.cli --version)
echo "notebook: $NB_DIR/lepton_quickstart.ipynb; packages: $PKG_DIR"
