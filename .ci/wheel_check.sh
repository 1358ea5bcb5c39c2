#!/usr/bin/env bash
# The package as a pip user gets it: build the sdist and the wheel (the wheel from the sdist), install the wheel
# into a fresh venv OUTSIDE the checkout, then run it from a folder that is not the checkout:
#   cryptonorm --help / --version; cryptonorm init DIR && cd DIR && cryptonorm run configs/quickstart.yaml
#   (offline, the synthetic market); python -c "import cryptonorm as cn".
# Needs the package index (or local mirrors) for the build's and the venv's dependencies. torch is installed
# first, pinned like the Makefile does (its CPU wheel lies on local disk on our machines).
# Usage: .ci/wheel_check.sh [PYTHON]   (default python3; CRYPTONORM_WHEEL_KEEP=1 keeps the work folder)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
REPO=$(pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cryptonorm-wheel.XXXXXX")
step() { printf '[wheel check %4ss] %s\n' "$SECONDS" "$*"; }
cleanup() { step "removing $WORK"; rm -rf "$WORK"; step "removed"; }
if [ "${CRYPTONORM_WHEEL_KEEP:-0}" != 1 ]; then trap cleanup EXIT; fi
case "$WORK" in "$REPO"/*) echo "wheel check: the work folder must be outside the checkout" >&2; exit 1;; esac

step "build sdist + wheel (in the background), and a fresh venv: torch first"
build() {
    "$PY" -m venv "$WORK/buildenv"
    "$WORK/buildenv/bin/python" -m pip install -q build
    "$WORK/buildenv/bin/python" -m build --outdir "$WORK/dist" "$REPO"
}
build >"$WORK/build.log" 2>&1 &
BUILD=$!
"$PY" -m venv "$WORK/venv"
V="$WORK/venv/bin"
# --no-compile: byte-compiling all of torch, pandas and scipy at install is most of a minute; imports compile
# what they use
"$V/python" -m pip install -q --no-compile "torch==2.13.0" || "$V/python" -m pip install -q --no-compile "torch>=2.4"
wait "$BUILD" || { tail -40 "$WORK/build.log" >&2; exit 1; }
ls "$WORK/dist"
WHEEL=$(ls "$WORK"/dist/cryptonorm-*.whl)
SDIST=$(ls "$WORK"/dist/cryptonorm-*.tar.gz)
tar -tzf "$SDIST" >"$WORK/sdist.txt"
grep -q '/configs/quickstart.yaml$' "$WORK/sdist.txt" || { echo "the sdist lacks configs/" >&2; exit 1; }
"$WORK/buildenv/bin/python" -m zipfile -l "$WHEEL" >"$WORK/wheel.txt"
grep -q 'cryptonorm/resources/configs/quickstart.yaml' "$WORK/wheel.txt" \
    || { echo "the wheel lacks cryptonorm/resources/configs/" >&2; exit 1; }

step "install the wheel"
"$V/python" -m pip install -q --no-compile "$WHEEL"

cd "$WORK"  # nothing below may see the checkout
step "cryptonorm --help, --version"
"$V/cryptonorm" --help >/dev/null
"$V/cryptonorm" --version
step "import cryptonorm as cn (from outside the checkout)"
"$V/python" -c "import cryptonorm as cn, pathlib; p = pathlib.Path(cn.__file__).resolve(); \
assert not str(p).startswith('$REPO'), p; print('cryptonorm', cn.__version__, 'from', p.parent); \
assert callable(cn.train) and callable(cn.load_config)"
step "cryptonorm init project, then init refuses it again"
"$V/cryptonorm" init project
if "$V/cryptonorm" init project 2>/dev/null; then echo "init onto a non-empty folder was not refused" >&2; exit 1; fi
step "cryptonorm run configs/quickstart.yaml (offline)"
(cd project && "$V/cryptonorm" run configs/quickstart.yaml --out runs/quickstart)
test -f project/runs/quickstart/run.json && test -f project/runs/quickstart/backtest/metrics.json
step "ok"
