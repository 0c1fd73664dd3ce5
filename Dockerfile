# One image for the API, the workers and the migration job.
# BASE_IMAGE: any Debian-like image with Python 3.11. Offline (no registry), build a local base
# first with `bash scripts/build_stack_base.sh` (debootstrap + this machine's virtualenv) and
# pass BASE_IMAGE=syntharena/stack-base:local; it already holds the dependencies.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app \
    SYNTHARENA_DATA_DIR=/var/lib/syntharena
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY backend backend
COPY worker worker
COPY evaluator evaluator
COPY frontend frontend
COPY migrations migrations
# Dependencies (skipped when the base image already provides them, e.g. the offline base).
RUN if [ -f /etc/syntharena-deps-installed ]; then echo "deps from base image"; \
    else pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir ".[segmentation]" ; fi
# The image-metric loops compiled ahead of time where the image has a C compiler (one-case CLI
# runs then use them too); best effort.
RUN python3 -m evaluator.image_kernels_aot --best-effort
# Compile the image-metric loops once into evaluator/__pycache__ (numba's cache): eval workers
# then load them instead of compiling (~4 CPU s) in every new child. Best effort.
RUN python3 -c "import numpy as np; from evaluator.image_metrics import compute_image_metrics as m; \
ct = np.random.default_rng(0).normal(0, 300, (12, 40, 40)).astype(np.float32); \
[m(ct, ct + 5, np.ones(ct.shape, bool), profile=p) for p in ('synthrad2023', 'synthrad2025')]" \
    || echo "image-metric loops not precompiled (numba unavailable): compiled on first use"
# The API and migrate run unprivileged (a named volume on the data dir keeps this owner);
# workers run as root for the Docker socket (see compose).
RUN (id syntharena >/dev/null 2>&1 || useradd -r -u 10001 -m syntharena) || true; \
    mkdir -p /var/lib/syntharena && chown 10001 /var/lib/syntharena
USER 10001
EXPOSE 8000
CMD ["python3", "-m", "uvicorn", "backend.main:app", "--host", "0.0.0.0", "--port", "8000"]
