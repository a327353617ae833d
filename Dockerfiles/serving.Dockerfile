# syntax=docker/dockerfile:1.7
# The modelwatch model server: `python -m serving` (docs/serving.md, docs/images.md).
#
# Two targets:
#   serving        (default) no model inside; mount a model directory at /models (a volume, a
#                  ConfigMap or an init container's download). Tag: <registry>/modelwatch-serving:<git-sha>
#   serving-model  the model directory MODEL_DIR baked in at /models. Tag:
#                  <registry>/modelwatch-serving:<model-version>-<git-sha>
# The demo model is not committed: `python -m serving.train` writes it to var/models/breast-cancer/1,
# the MODEL_DIR default. Build from the repository root, e.g.:
#   docker build -f Dockerfiles/serving.Dockerfile --target serving-model \
#     --build-arg MODEL_VERSION=1 --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t ghcr.io/modelwatch/modelwatch-serving:1-"$(git rev-parse --short=12 HEAD)" .
#
# The base is pinned by exact tag. A digest (python:3.11.15-slim-bookworm@sha256:…) would pin
# the bytes as well, but it cannot be looked up or verified without registry access; add it
# where images are built with network access to the registry.

# ---------------------------------------------------------------- builder: wheels only
FROM python:3.11.15-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar/ sidecar/
COPY serving/ serving/
# The project and every dependency of its serving extra as wheels (all publish manylinux
# wheels, so no compiler is needed here either).
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[serving]"

# ---------------------------------------------------------------- runtime (model mounted)
FROM python:3.11.15-slim-bookworm AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="modelwatch-serving" \
      org.opencontainers.image.description="modelwatch ONNX model server: batched predictions, Prometheus metrics, prediction logs to the modelwatch sidecar" \
      org.opencontainers.image.source="https://github.com/modelwatch/modelwatch" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

RUN groupadd --system --gid 10001 modelwatch \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin modelwatch

# Only the builder's wheels, bind-mounted for this one step: no wheel, cache or build tool is
# left in a layer. Byte code is compiled now, so a read-only root never needs to write any.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --compile /wheels/*.whl

# The server writes no files: predictions and feedback go to the sidecar over HTTP. /models
# holds model.onnx and metadata.json and is only read.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELWATCH_MODEL_URI=/models \
    MODELWATCH_SERVING_ADDR=0.0.0.0:8080
WORKDIR /models

USER 10001:10001
# 8080: the prediction API, /healthz, /readyz and /metrics.
EXPOSE 8080
STOPSIGNAL SIGTERM
# Liveness only (/readyz tells whether the model is loaded); urllib raises (exit 1) on a
# refused connection or a non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]
CMD ["python", "-m", "serving"]

# ---------------------------------------------------------------- opt-in: model baked in
FROM runtime AS serving-model
# MODEL_DIR: a directory holding model.onnx and metadata.json, relative to the build context
# (the default is what `python -m serving.train` writes). MODEL_VERSION must equal the
# metadata's version: the build fails otherwise, so the tag cannot lie about the model.
ARG MODEL_DIR=var/models/breast-cancer/1
ARG MODEL_NAME=breast-cancer
ARG MODEL_VERSION=1
LABEL io.modelwatch.model.name="${MODEL_NAME}" \
      io.modelwatch.model.version="${MODEL_VERSION}"
COPY ${MODEL_DIR}/model.onnx ${MODEL_DIR}/metadata.json /models/
RUN python -c "import json, sys; m = json.load(open('/models/metadata.json')); sys.exit(0 if (m['name'], m['version']) == (sys.argv[1], sys.argv[2]) else 'metadata.json is ' + m['name'] + ' ' + m['version'] + ', not ' + ' '.join(sys.argv[1:]))" "${MODEL_NAME}" "${MODEL_VERSION}"

# ---------------------------------------------------------------- default target
FROM runtime AS serving
