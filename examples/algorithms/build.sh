#!/usr/bin/env bash
# Builds an example algorithm image and its upload tarball (`docker save | gzip`), offline.
# Usage: build.sh NAME [NAME...]   NAME: static-c | python | gc-style | fail-crash | fail-sleep |
#                                        fail-oom | fail-wrong-geometry | fail-no-output | fail-nan |
#                                        slow | skip-some | trivial-zeros | trivial-copy |
#                                        trivial-soft-tissue | all
# Image tag: syntharena-example/NAME:latest; tarball: $SYNTHARENA_EXAMPLES_OUT/NAME.tar.gz
# (default build/examples/). Set FORCE=1 to rebuild an image that already exists.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="${SYNTHARENA_EXAMPLES_OUT:-$ROOT/build/examples}"
ALL=(static-c python gc-style fail-crash fail-sleep fail-oom fail-wrong-geometry fail-no-output
     fail-nan slow skip-some trivial-zeros trivial-copy trivial-soft-tissue)
mkdir -p "$OUT"

project_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"
    elif [ -x "$ROOT/.venv/bin/python" ]; then echo "$ROOT/.venv/bin/python"
    else echo python3; fi
}

# Run quietly; show the output only when the command fails.
quiet() { local log; log="$("$@" 2>&1)" || { echo "$log" >&2; return 1; }; }

# The baseline's model depends on its code and on the phantom generator it is fitted on: an
# image labelled with another key is refitted and rebuilt (e.g. after new regions or tasks).
model_key() {
    cat "$HERE/python/fit.py" "$HERE/python/baseline.py" "$ROOT"/evaluator/phantom*.py \
        2>/dev/null | sha256sum | cut -c1-16
}
current() {  # the image exists and, for the baseline, carries the current model key
    docker image inspect "$2" >/dev/null 2>&1 || return 1
    [ "$1" != python ] || [ "$(docker image inspect -f \
        '{{ with .Config.Labels }}{{ index . "syntharena.model" }}{{ end }}' "$2")" = "$(model_key)" ]
}

build_one() {
    local name="$1" tag="syntharena-example/$1:latest" ctx
    if [ "${FORCE:-0}" != 1 ] && current "$name" "$tag" && [ -s "$OUT/$name.tar.gz" ]; then
        echo "[build] $tag exists"; return 0
    fi
    case "$name" in
        static-c|fail-*|slow|skip-some|trivial-*)
            ctx="$(mktemp -d)"
            gcc -O2 -static -o "$ctx/synth" "$HERE/static-c/synth.c" -lm
            cp "$HERE/static-c/Dockerfile" "$ctx/"
            local mode=map
            [ "$name" = static-c ] || mode="${name#fail-}"
            [ "$name" = slow ] && mode=slow
            [ "$name" = skip-some ] && mode=skip-some
            case "$name" in trivial-*) mode="${name#trivial-}" ;; esac
            quiet docker build -q --build-arg "MODE=$mode" -t "$tag" "$ctx"
            rm -rf "$ctx" ;;
        python)
            bash "$HERE/build_python_base.sh"
            ctx="$(mktemp -d)"
            cp "$HERE/python/Dockerfile" "$HERE/python/process.py" "$HERE/python/baseline.py" "$ctx/"
            # The baseline's model is fitted here, on training phantoms (the host's Python with
            # the project: PYTHON, else .venv, else python3), and baked into the image.
            PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$(project_python)" \
                "$HERE/python/fit.py" "$ctx/model.json" >&2
            quiet docker build -q --label "syntharena.model=$(model_key)" -t "$tag" "$ctx"
            rm -rf "$ctx" ;;
        gc-style)  # FROM the python example: only its entry point differs
            build_one python
            quiet docker build -q -t "$tag" "$HERE/$name" ;;
        *) echo "unknown example '$name'; one of: ${ALL[*]} all" >&2; return 2 ;;
    esac
    docker save "$tag" | gzip -1 > "$OUT/$name.tar.gz.part"
    mv "$OUT/$name.tar.gz.part" "$OUT/$name.tar.gz"
    echo "[build] $tag -> $OUT/$name.tar.gz ($(du -h "$OUT/$name.tar.gz" | cut -f1))"
}

[ $# -gt 0 ] || { echo "usage: $0 NAME... (one of: ${ALL[*]} all)" >&2; exit 2; }
for n in "$@"; do
    if [ "$n" = all ]; then for m in "${ALL[@]}"; do build_one "$m"; done; else build_one "$n"; fi
done
