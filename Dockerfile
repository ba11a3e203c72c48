# syntax=docker/dockerfile:1
#
# One image, two roles:
#
#   API (default CMD):  python -m gunicorn -c service/gunicorn_conf.py 'service.app:create_app()'
#   inference worker:   python -m service.worker      (same image, command overridden)
#
# Both need SENTIMENT_REDIS_URL (the image starts no Redis of its own). Every
# other setting is a SENTIMENT_* variable (service/config.py). The model is
# baked in from model_store/: the build fails if no complete version is there
# (train one with `make train` first).
#
#   docker build -t sentiment-service:local .
#
# GPU workers: the `tensorflow` wheel of requirements.txt has no CUDA
# libraries, so on python:3.11-slim it runs on the CPU even with a GPU
# attached. Build a GPU image with:
#
#   docker build --build-arg TENSORFLOW_EXTRAS=and-cuda -t sentiment-service:local-gpu .
#
# which adds tensorflow[and-cuda] (NVIDIA's CUDA/cuDNN wheels, several GB) at
# the version pinned in requirements.txt.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the runtime virtualenv ---------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Runtime dependencies only (not requirements-dev.txt). Every pinned package
# has manylinux wheels for x86_64, so no compiler is needed; on another
# architecture build with --platform linux/amd64.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt

ARG TENSORFLOW_EXTRAS=""
RUN if [ -n "$TENSORFLOW_EXTRAS" ]; then \
        pip install --no-cache-dir \
            "tensorflow[${TENSORFLOW_EXTRAS}]==$(python -c 'import importlib.metadata as m; print(m.version("tensorflow"))')"; \
    fi

# --- runtime ---------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    SENTIMENT_HOST=0.0.0.0 \
    PORT=8000

RUN groupadd --gid 10001 app \
 && useradd --uid 10001 --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app

# service/config.py finds the model store next to the package: /app/model_store.
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY model_store/ ./model_store/
COPY service/ ./service/

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

# Fail the build, not the first container, when no complete model version was
# copied in (or the app user cannot read it).
RUN python -c "from service.config import Settings; from service.model_store import resolve; \
s = Settings(); v = resolve(s.model_dir, s.model_version); v.load_tokenizer(); \
print(f'bundled model: {v.name} v{v.version} ({v.path})')"

EXPOSE 8000
STOPSIGNAL SIGTERM

# Liveness of the API role (no curl in slim images). The worker role has no
# HTTP server on $PORT: compose and Kubernetes give it its own check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=4)"]

# API role. Worker role: same image, command `python -m service.worker`.
CMD ["python", "-m", "gunicorn", "-c", "service/gunicorn_conf.py", "service.app:create_app()"]
