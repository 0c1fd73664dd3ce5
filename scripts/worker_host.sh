#!/usr/bin/env bash
# Adds a GPU worker host to a running SynthArena stack (README "Scaling out"). Run it on the new
# host, which needs only a Docker engine (with the NVIDIA container toolkit for GPUs), the
# platform's image, and network access to the stack's PostgreSQL, Redis and object storage.
#   bash scripts/worker_host.sh HOST_ENV_FILE
# HOST_ENV_FILE (KEY=value lines; see README): SYNTHARENA_DATABASE_URL, SYNTHARENA_REDIS_URL,
# SYNTHARENA_SECRET_KEY, SYNTHARENA_STORAGE_BACKEND=s3, SYNTHARENA_S3_ENDPOINT_URL,
# SYNTHARENA_S3_BUCKET, SYNTHARENA_S3_ACCESS_KEY_ID, SYNTHARENA_S3_SECRET_ACCESS_KEY,
# SYNTHARENA_GT_S3_BUCKET (never the GT_ keys: this host runs participant code).
# Optional variables (environment or file): GPU_IDS (JSON, default ["0"]; [] = no pinning),
# GPU_COUNT (children, default: the number of GPU_IDS), DATA_DIR (this host's folder for the
# worker's object cache and the containers' /input and /output, default
# /var/lib/syntharena-worker), NAME (container name,
# default syntharena-worker-gpu), IMAGE (default syntharena/app:latest), NETWORK (a Docker
# network to join, e.g. when the stack runs on the same engine), DOCKER_SOCKET (the engine the
# algorithm containers run on, default /var/run/docker.sock), QUEUES (default gpu).
set -euo pipefail
ENV_FILE="${1:?usage: worker_host.sh HOST_ENV_FILE (see README, Scaling out)}"
[ -r "$ENV_FILE" ] || { echo "cannot read $ENV_FILE" >&2; exit 2; }
# Host-side settings may also come from the file (lines without the SYNTHARENA_ prefix).
get() { local v; v="$(sed -n "s/^$1=//p" "$ENV_FILE" | tail -1)"; printf '%s' "${v:-$2}"; }
GPU_IDS="${GPU_IDS:-$(get GPU_IDS '["0"]')}"
GPU_COUNT="${GPU_COUNT:-$(get GPU_COUNT "")}"
if [ -z "$GPU_COUNT" ]; then
    GPU_COUNT="$(python3 -c 'import json,sys; print(max(1, len(json.loads(sys.argv[1]))))' "$GPU_IDS")"
fi
DATA_DIR="${DATA_DIR:-$(get DATA_DIR /var/lib/syntharena-worker)}"
NAME="${NAME:-$(get NAME syntharena-worker-gpu)}"
IMAGE="${IMAGE:-$(get IMAGE syntharena/app:latest)}"
NETWORK="${NETWORK:-$(get NETWORK "")}"
DOCKER_SOCKET="${DOCKER_SOCKET:-$(get DOCKER_SOCKET /var/run/docker.sock)}"
QUEUES="${QUEUES:-$(get QUEUES gpu)}"
if grep -q '^SYNTHARENA_GT_S3_\(ACCESS_KEY_ID\|SECRET_ACCESS_KEY\)=' "$ENV_FILE"; then
    echo "$ENV_FILE holds ground-truth keys (SYNTHARENA_GT_S3_*KEY*): a GPU host runs" \
         "participant code and must not hold them; remove those lines" >&2
    exit 2
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || {
    echo "image $IMAGE is not on this host: docker load < syntharena-app.tar (README)" >&2; exit 2; }
mkdir -p "$DATA_DIR/work"
args=(-d --name "$NAME" --restart unless-stopped --user 0 --stop-timeout "${STOP_TIMEOUT:-600}"
      --env-file "$ENV_FILE"
      -e "SYNTHARENA_WORKER_GPU_IDS=$GPU_IDS" -e SYNTHARENA_DATA_DIR=/var/lib/syntharena
      -e "SYNTHARENA_HOST_WORK_DIR=$DATA_DIR/work" -v "$DATA_DIR:/var/lib/syntharena"
      -v "$DOCKER_SOCKET:/var/run/docker.sock")
[ -n "$NETWORK" ] && args+=(--network "$NETWORK")
docker run "${args[@]}" "$IMAGE" python3 -m celery -A worker.celery_app worker -Q "$QUEUES" \
    -c "$GPU_COUNT" -n "gpu@$NAME" --loglevel INFO
echo "[worker-host] $NAME: queue $QUEUES, $GPU_COUNT children, GPUs $GPU_IDS, data dir $DATA_DIR"
