# syntax=docker/dockerfile:1
#
# One Dockerfile, three images (targets), one per role:
#
#   api         gunicorn + Flask: validates, tokenizes and queues requests in Redis.
#               No TensorFlow, Keras or NumPy (requirements-api.txt).
#   worker      the inference worker on CPUs: TensorFlow (requirements-worker.txt).
#   worker-gpu  the inference worker on NVIDIA GPUs: the same, plus TensorFlow's
#               `and-cuda` extra (NVIDIA's CUDA and cuDNN wheels) at the same version.
#
#   docker build --target api        -t sentiment-api:local .
#   docker build --target worker     -t sentiment-worker:local .
#   docker build --target worker-gpu -t sentiment-worker-gpu:local .
#
# Each image carries the whole model store of the commit (the API image without
# the weights), so that the model config (SENTIMENT_MODEL_CONFIG, docs/models.md)
# can serve, canary, promote and roll back any committed version without a new
# image. Without a config, SENTIMENT_MODEL_VERSION (MODEL_VERSION below) is the
# one version served, the same in an API image and a worker image built from the
# same commit and arguments; the build fails if it is not a complete export.
#
# Every other setting is a SENTIMENT_* variable (service/config.py). The images
# start no Redis: give them SENTIMENT_REDIS_URL. Logs are JSON lines on stderr.
#
# The pinned wheels exist for x86_64 (on an ARM machine: --platform linux/amd64).
# For reproducible builds, pin PYTHON_IMAGE by digest in your registry
# (python:3.11-slim-trixie@sha256:...).

ARG PYTHON_IMAGE=python:3.11-slim-trixie
ARG MODEL_NAME=sentiment
# CHANGE WITH THE MODEL VERSION (docker/compose.yaml and k8s/ name it too; tests/test_deploy_*.py check they agree).
ARG MODEL_VERSION=3

# --- builders: one virtualenv per role, from wheels only (no compiler needed) ----------------------

FROM ${PYTHON_IMAGE} AS venv-base
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

FROM venv-base AS venv-api
COPY requirements-api.txt /tmp/
RUN pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements-api.txt

# TensorFlow's C++ headers (tensorflow/include, ~430 MB) serve only to compile
# custom ops: the workers never do, so they stay in the builder.
FROM venv-base AS venv-worker
COPY requirements-worker.txt /tmp/
RUN pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements-worker.txt \
 && rm -rf "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tensorflow/include"

# The GPU set is the CPU set with tensorflow's `and-cuda` extra, at the version
# pinned in requirements-worker.txt (one place for the pin).
FROM venv-base AS venv-worker-gpu
COPY requirements-worker.txt /tmp/
RUN sed 's/^tensorflow==/tensorflow[and-cuda]==/' /tmp/requirements-worker.txt > /tmp/requirements-worker-gpu.txt \
 && grep -q '^tensorflow\[and-cuda\]==' /tmp/requirements-worker-gpu.txt \
 && pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements-worker-gpu.txt \
 && rm -rf "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tensorflow/include"

# The model store as the API reads it: vocabularies and metadata, no weights (variables/).
FROM ${PYTHON_IMAGE} AS api-models
COPY model_store/ /models/
RUN find /models -type d -name variables -prune -exec rm -rf {} +

# --- what every final image shares: a slim Python, a numeric non-root user ------------------------

FROM ${PYTHON_IMAGE} AS runtime
ARG MODEL_NAME
ARG MODEL_VERSION
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    SENTIMENT_LOG_FORMAT=json \
    SENTIMENT_HOST=0.0.0.0 \
    SENTIMENT_MODEL_NAME=${MODEL_NAME} \
    SENTIMENT_MODEL_VERSION=${MODEL_VERSION}
# No home directory: nothing is written outside /tmp and the workers' compile
# cache (Kubernetes mounts an emptyDir on each; the root filesystem can be read-only).
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app \
 && install -d -o 10001 -g 10001 /var/cache/sentiment
# service/config.py finds the model store next to the package: /app/model_store.
WORKDIR /app
STOPSIGNAL SIGTERM
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# --- inference workers ---------------------------------------------------------------------------

FROM runtime AS worker-base
# Prometheus metrics; the server opens once the model is loaded and warmed up,
# so it doubles as the worker's health check. Compiled XLA programs are kept in
# /var/cache/sentiment (a volume: Compose's named volume, Kubernetes' emptyDir,
# which outlives a container restart), so a restarted worker loads them instead
# of compiling again.
ENV SENTIMENT_WORKER_METRICS_PORT=9100 \
    SENTIMENT_COMPILE_CACHE_DIR=/var/cache/sentiment/xla
VOLUME ["/var/cache/sentiment"]
EXPOSE 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['SENTIMENT_WORKER_METRICS_PORT'] + '/metrics', timeout=4)"]
# First SIGTERM: finish and acknowledge the batch in hand, sign off, exit 0.
CMD ["python", "-m", "service.worker"]

FROM worker-base AS worker-gpu
ARG MODEL_NAME
ARG MODEL_VERSION
COPY --from=venv-worker-gpu /opt/venv /opt/venv
COPY service/ ./service/
COPY model_store/ ./model_store/
# Fail the build, not the first pod, when the model is incomplete or unreadable by the app user.
RUN python -c "from service.config import Settings; from service.model_store import resolve; s = Settings(); v = resolve(s.model_dir, s.model_version); v.load_tokenizer(); print('bundled', v.name, v.version)"

FROM worker-base AS worker
ARG MODEL_NAME
ARG MODEL_VERSION
COPY --from=venv-worker /opt/venv /opt/venv
COPY service/ ./service/
COPY model_store/ ./model_store/
RUN python -c "from service.config import Settings; from service.model_store import resolve; s = Settings(); v = resolve(s.model_dir, s.model_version); v.load_tokenizer(); print('bundled', v.name, v.version)"

# --- the API (last: the default target) ----------------------------------------------------------

FROM runtime AS api
ARG MODEL_NAME
ARG MODEL_VERSION
ENV PORT=8000
COPY --from=venv-api /opt/venv /opt/venv
COPY service/ ./service/
# The API reads the vocabularies (assets/) and metadata.json only: the weights
# (variables/, most of each export) stay out of its image. saved_model.pb (the
# graph, without weights) comes along because service/model_store.py counts an
# export as complete by it.
COPY --from=api-models /models/ ./model_store/
RUN python -c "from service.config import Settings; from service.model_store import resolve; s = Settings(); v = resolve(s.model_dir, s.model_version); v.load_tokenizer(); print('bundled', v.name, v.version)"
EXPOSE 8000
# Liveness of the process (slim images have no curl). Readiness (/readyz) needs
# Redis and a live worker: orchestrators probe it themselves.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=4)"]
# gunicorn's arbiter is PID 1 and gets SIGTERM: it stops accepting, lets
# requests in flight finish (graceful_timeout, service/gunicorn_conf.py), exits.
CMD ["python", "-m", "gunicorn", "-c", "service/gunicorn_conf.py", "service.api.app:create_app()"]
