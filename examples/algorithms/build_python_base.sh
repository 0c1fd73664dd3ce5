#!/usr/bin/env bash
# Builds the offline Python base image for example algorithms, without any registry:
# a Debian bookworm root filesystem from debootstrap (python3 + numpy) plus SimpleITK
# installed from the host side, loaded with `docker import`.
# Usage: build_python_base.sh [TAG]   (default syntharena/python-base:bookworm; skipped if present)
set -euo pipefail
TAG="${1:-syntharena/python-base:bookworm}"
MIRROR="${SYNTHARENA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if docker image inspect "$TAG" >/dev/null 2>&1; then echo "[base] $TAG exists"; exit 0; fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }
WORK="$(mktemp -d /tmp/syntharena-rootfs.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
ROOTFS="$WORK/rootfs"
echo "[base] debootstrap bookworm -> $ROOTFS (about a minute)"
debootstrap --variant=minbase --include=python3,python3-numpy bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -30 "$WORK/debootstrap.log" >&2; exit 1; }
# SimpleITK for the container's Python 3.11, installed from the host (containers have no
# registry access); manylinux wheels only, so the host's Python version does not matter.
SITE="$ROOTFS/usr/local/lib/python3.11/dist-packages"
mkdir -p "$SITE"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV_PIP="$HERE/../../.venv/bin/pip"  # the project's virtualenv (scripts/services.sh makes it)
if [ -z "${PIP:-}" ]; then
    if [ -x "$VENV_PIP" ]; then PIP="$VENV_PIP"
    elif command -v pip3 >/dev/null; then PIP=pip3
    else PIP="python3 -m pip"; fi
fi
$PIP install -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux2014_x86_64 --target "$SITE" "SimpleITK>=2.4,<3"
# Slim: drop apt lists, docs and caches (the image is what participants upload).
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/usr/share/doc/* \
    "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*
echo "[base] docker import -> $TAG"
tar -C "$ROOTFS" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$TAG" >/dev/null
chroot "$ROOTFS" python3 -c "import SimpleITK, numpy; print('[base] SimpleITK', SimpleITK.Version_VersionString(), 'numpy', numpy.__version__)" || true
