# syntax=docker/dockerfile:1.7
# The modelwatch monitoring sidecar: `python -m sidecar serve` (docs/images.md).
#
# Build from the repository root:
#   docker build -f Dockerfiles/sidecar.Dockerfile \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t ghcr.io/modelwatch/modelwatch-sidecar:0.1.0-"$(git rev-parse --short=12 HEAD)" .
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
# The project and every dependency of its sidecar extra as wheels. All of them publish
# manylinux wheels, so the builder needs no compiler either.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[sidecar]"

# ---------------------------------------------------------------- runtime
FROM python:3.11.15-slim-bookworm AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="modelwatch-sidecar" \
      org.opencontainers.image.description="modelwatch monitoring sidecar: PSI/KS drift, latency and data-quality metrics for Prometheus, prediction logs for Elasticsearch" \
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

# The spool (accepted requests waiting to be shipped, dead letters) and the NDJSON prediction
# log of the file sink are the only paths the sidecar writes: both live on the one volume.
RUN mkdir -p /var/lib/modelwatch/spool/predictions \
    && chown -R 10001:10001 /var/lib/modelwatch
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELWATCH_SPOOL_DIR=/var/lib/modelwatch/spool \
    MODELWATCH_LOG_DIR=/var/lib/modelwatch/spool/predictions
VOLUME ["/var/lib/modelwatch/spool"]
WORKDIR /var/lib/modelwatch

USER 10001:10001
# 9500: GET /metrics for Prometheus. 8081: the ingest API, on 127.0.0.1 unless
# MODELWATCH_INGEST_ADDR widens it (the model server in the same pod calls it on loopback).
EXPOSE 9500 8081
STOPSIGNAL SIGTERM
# Liveness of the ingest listener; urllib raises (exit 1) on a refused connection or non-2xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=3)"]
# The reference profiles are mounted read-only under /etc/modelwatch/profiles/ and named in
# MODELWATCH_PROFILES (one file per model version).
ENTRYPOINT ["python", "-m", "sidecar"]
CMD ["serve"]
