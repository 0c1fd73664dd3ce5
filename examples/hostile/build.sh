#!/usr/bin/env bash
# Builds the hostile algorithm images of the reliability suite (issue #7), offline, in one go:
# hostile.c is compiled once (gcc -static); each image is that binary plus a setuid-root copy
# (/suid) in a root filesystem made by `docker import` (no registry, no builder), with
# HOSTILE_MODE picking the attack and USER 1000:1000 (a non-root image, as the platform requires).
# Usage: build.sh [MODE...]   (default: all modes)
# Image tag: syntharena-hostile/MODE:latest; tarball: $SYNTHARENA_HOSTILE_OUT/MODE.tar.gz
# (default build/hostile/). Images are cached by a hash of hostile.c and this script.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="${SYNTHARENA_HOSTILE_OUT:-$ROOT/build/hostile}"
ALL=(fork-bomb memory-bomb cpu-spin sleep-forever network write-input fill-disk many-files
     log-flood symlink-file symlink-dir mha-external setuid secrets docker-socket)
[ $# -gt 0 ] || set -- "${ALL[@]}"
mkdir -p "$OUT"
SRC_HASH="$(cat "$HERE/hostile.c" "$HERE/build.sh" | sha256sum | cut -c1-16)"
# Network probes target this machine only: loopback, the Docker bridge gateway and the host's
# own first address (where Redis, PostgreSQL and the API listen).
GATEWAY="$(ip -4 -o addr show docker0 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1)"
HOST_IP="$(hostname -I 2>/dev/null | awk '{print $1}')"
TARGETS="127.0.0.1,${GATEWAY:-172.17.0.1}${HOST_IP:+,$HOST_IP}"

todo=()
for mode in "$@"; do
    tag="syntharena-hostile/$mode:latest"
    have="$(docker image inspect -f '{{index .Config.Labels "org.syntharena.hostile-src"}}' "$tag" 2>/dev/null || true)"
    if [ "$have" = "$SRC_HASH" ] && [ -s "$OUT/$mode.tar.gz" ]; then continue; fi
    todo+=("$mode")
done
[ ${#todo[@]} -gt 0 ] || { echo "[hostile] all images up to date"; exit 0; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
gcc -O2 -static -o "$ctx/hostile" "$HERE/hostile.c"
# The root filesystem: /hostile, /suid (mode 4755, owned by root), empty mount points.
python3 - "$ctx" <<'PY'
import io, sys, tarfile
ctx = sys.argv[1]
data = open(f"{ctx}/hostile", "rb").read()
with tarfile.open(f"{ctx}/rootfs.tar", "w") as tar:
    for d in ("tmp", "input", "output", "etc", "proc", "sys", "dev"):
        info = tarfile.TarInfo(d); info.type = tarfile.DIRTYPE; info.mode = 0o1777 if d == "tmp" else 0o755
        tar.addfile(info)
    for name, mode in (("hostile", 0o755), ("suid", 0o4755)):
        info = tarfile.TarInfo(name); info.size = len(data); info.mode = mode; info.uid = info.gid = 0
        tar.addfile(info, io.BytesIO(data))
PY
for mode in "${todo[@]}"; do
    tag="syntharena-hostile/$mode:latest"
    extra=()
    [ "$mode" = network ] && extra=(--change "ENV HOSTILE_TARGETS=$TARGETS")
    docker import \
        --change "USER 1000:1000" \
        --change 'ENTRYPOINT ["/hostile"]' \
        --change "ENV HOSTILE_MODE=$mode" \
        --change "LABEL org.syntharena.hostile-src=$SRC_HASH" \
        "${extra[@]}" "$ctx/rootfs.tar" "$tag" >/dev/null
    docker save "$tag" | gzip -1 > "$OUT/$mode.tar.gz.part"
    mv "$OUT/$mode.tar.gz.part" "$OUT/$mode.tar.gz"
    echo "[hostile] $tag -> $OUT/$mode.tar.gz"
done
