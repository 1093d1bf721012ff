#!/usr/bin/env bash
# Install the lepton-hls board side (lepton_host: numpy + pynq only) onto a stock PYNQ image (v3.0.x).
#
#   sudo ./install.sh [PACKAGE_DIR ...]
#
# - copies lepton_host into the Python environment that runs PYNQ's Jupyter (the pynq venv on v3 images);
# - copies the quick-start notebook to ~xilinx/jupyter_notebooks/lepton-hls/;
# - copies any overlay package directories given (built on a workstation with `lepton-hls build`) to
#   ~xilinx/lepton/packages/ and checks their sha256s on the board.
#
# Overrides for other layouts (and for testing off-board): LEPTON_SITE_PACKAGES, LEPTON_NOTEBOOK_DIR,
# LEPTON_PACKAGE_DIR, LEPTON_PYTHON. Nothing is downloaded: the board needs no network.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$HERE/lepton_host"
[ -d "$SRC" ] || { echo "install.sh: $SRC not found; run it from a lepton-hls checkout's host/ directory" >&2; exit 1; }

if [ -z "${LEPTON_PYTHON:-}" ]; then
    if [ -f /etc/profile.d/pynq_venv.sh ]; then
        # shellcheck disable=SC1091
        source /etc/profile.d/pynq_venv.sh
    fi
    LEPTON_PYTHON="$(command -v python3)"
fi
PY="$LEPTON_PYTHON"

"$PY" - <<'PYCHECK' || { echo "install.sh: $PY lacks numpy; is this a PYNQ image?" >&2; exit 1; }
import numpy
PYCHECK
if ! "$PY" -c "import pynq" 2>/dev/null; then
    echo "install.sh: warning: pynq does not import with $PY (fine off-board; required on the board)" >&2
fi

SITE="${LEPTON_SITE_PACKAGES:-$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')}"
HOME_X="$(getent passwd xilinx 2>/dev/null | cut -d: -f6 || true)"
HOME_X="${HOME_X:-$HOME}"
NB_DIR="${LEPTON_NOTEBOOK_DIR:-$HOME_X/jupyter_notebooks/lepton-hls}"
PKG_DIR="${LEPTON_PACKAGE_DIR:-$HOME_X/lepton/packages}"

mkdir -p "$SITE" "$NB_DIR" "$PKG_DIR"
rm -rf "$SITE/lepton_host"
cp -r "$SRC" "$SITE/lepton_host"
find "$SITE/lepton_host" -name "__pycache__" -type d -prune -exec rm -rf {} +
cp "$HERE"/notebooks/*.ipynb "$NB_DIR/"

for pkg in "$@"; do
    name="$(basename "$pkg")"
    rm -rf "${PKG_DIR:?}/$name"
    cp -r "$pkg" "$PKG_DIR/$name"
    PYTHONPATH="$SITE" "$PY" -c "
import sys
from lepton_host.manifest import load_manifest
m = load_manifest(sys.argv[1])
print(f'package {m.model.name}: {len(m.artifacts)} artifacts verified')" "$PKG_DIR/$name"
done

if [ -n "${SUDO_USER:-}" ] && id xilinx >/dev/null 2>&1; then
    chown -R xilinx:xilinx "$NB_DIR" "$PKG_DIR" 2>/dev/null || true
fi

PYTHONPATH="$SITE" "$PY" -c "
import sys
import lepton_host, lepton_host.runtime, lepton_host.packing, lepton_host.backends
assert lepton_host.__file__.startswith(sys.argv[1]), f'another lepton_host shadows the copy: {lepton_host.__file__}'
assert 'tensorflow' not in sys.modules
print('lepton_host installed in', sys.argv[1])" "$SITE"
echo "notebook: $NB_DIR/lepton_quickstart.ipynb; packages: $PKG_DIR"
