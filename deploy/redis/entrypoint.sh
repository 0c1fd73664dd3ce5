#!/usr/bin/env bash
# Like the official redis image: the server runs as user redis in /data and accepts
# connections from other containers (protected mode is for a server exposed without a password;
# here only the compose network reaches it).
set -euo pipefail
if [ "${1:-}" = redis-server ]; then
    shift
    chown redis:redis /data 2>/dev/null || true
    exec setpriv --reuid=redis --regid=redis --init-groups \
        redis-server --dir /data --bind 0.0.0.0 --protected-mode no "$@"
fi
exec "$@"
