# syntax=docker/dockerfile:1.7
# The modelwatch model server on NVIDIA GPUs: `python -m serving` with onnxruntime-gpu's CUDA
# execution provider (docs/images.md). Same user, labels, ports, health check and targets as
# Dockerfiles/serving.Dockerfile; its own repository (<registry>/modelwatch-serving-gpu:<git-sha>,
# or <model-version>-<git-sha> with a baked model).
#
# CUDA: onnxruntime-gpu 1.19 to 1.26 on PyPI are built for CUDA 12.x with cuDNN 9.x (1.27 and
# later for CUDA 13.x). The base is the newest CUDA 12 runtime with cuDNN 9 on Ubuntu 22.04,
# whose universe archive ships Python 3.11; ONNXRUNTIME_GPU_VERSION and the base move together.
# The base is pinned by exact tag; a digest cannot be verified without registry access.
#
#   docker build -f Dockerfiles/serving-gpu.Dockerfile --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t ghcr.io/modelwatch/modelwatch-serving-gpu:"$(git rev-parse --short=12 HEAD)" .

# ---------------------------------------------------------------- Python 3.11 on the CUDA base
FROM nvidia/cuda:12.9.1-cudnn-runtime-ubuntu22.04 AS python
ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu package versions are not pinned: the archive replaces a version in -updates and
# -security when a fix lands, so a pin breaks the next build; the base tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------- builder: wheels only
FROM python AS builder
ARG ONNXRUNTIME_GPU_VERSION=1.26.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar/ sidecar/
COPY serving/ serving/
# The serving extra pins onnxruntime (CPU), and onnxruntime and onnxruntime-gpu install the
# same `onnxruntime` package, so the two must never both be installed. The requirements are
# the serving extra read from pyproject.toml with onnxruntime renamed to onnxruntime-gpu (its
# version bounds kept), and a constraint pins onnxruntime-gpu to the CUDA 12 build. The
# project itself is a wheel without dependencies (its base dependency list is empty).
RUN python3.11 -m venv /opt/build \
    && mkdir /wheels \
    && /opt/build/bin/python -c "import re, tomllib; extra = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['serving']; print(*(re.sub(r'^onnxruntime(?![-_.A-Za-z0-9])', 'onnxruntime-gpu', r) for r in extra), sep=chr(10))" > /wheels/requirements.txt \
    && echo "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" > /wheels/constraints.txt \
    && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels --no-deps . \
    && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels \
        -r /wheels/requirements.txt -c /wheels/constraints.txt

# ---------------------------------------------------------------- runtime (model mounted)
FROM python AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="modelwatch-serving-gpu" \
      org.opencontainers.image.description="modelwatch ONNX model server with the CUDA execution provider: batched predictions, Prometheus metrics, prediction logs to the modelwatch sidecar" \
      org.opencontainers.image.source="https://github.com/modelwatch/modelwatch" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

RUN groupadd --system --gid 10001 modelwatch \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin modelwatch

# A virtual environment keeps the wheels apart from Ubuntu's Python packages; only the
# builder's wheels are installed, bind-mounted for this one step (nothing left in a layer).
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python3.11 -m venv /opt/modelwatch \
    && /opt/modelwatch/bin/pip install --no-cache-dir --no-index --compile /wheels/*.whl

ENV PATH=/opt/modelwatch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELWATCH_MODEL_URI=/models \
    MODELWATCH_SERVING_ADDR=0.0.0.0:8080
WORKDIR /models

USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]
CMD ["python", "-m", "serving"]

# ---------------------------------------------------------------- opt-in: model baked in
FROM runtime AS serving-model
ARG MODEL_DIR=var/models/breast-cancer/1
ARG MODEL_NAME=breast-cancer
ARG MODEL_VERSION=1
LABEL io.modelwatch.model.name="${MODEL_NAME}" \
      io.modelwatch.model.version="${MODEL_VERSION}"
COPY ${MODEL_DIR}/model.onnx ${MODEL_DIR}/metadata.json /models/
RUN python -c "import json, sys; m = json.load(open('/models/metadata.json')); sys.exit(0 if (m['name'], m['version']) == (sys.argv[1], sys.argv[2]) else 'metadata.json is ' + m['name'] + ' ' + m['version'] + ', not ' + ' '.join(sys.argv[1:]))" "${MODEL_NAME}" "${MODEL_VERSION}"

# ---------------------------------------------------------------- default target
FROM runtime AS serving
