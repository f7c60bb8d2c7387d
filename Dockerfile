# syntax=docker/dockerfile:1
# alert2voice container image.
#
#   docker build -t alert2voice:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#   docker run --read-only --tmpfs /tmp -p 9095:9095 \
#     -v "$PWD/config.yaml:/etc/alert2voice/config.yaml:ro" -v alert2voice-state:/var/lib/alert2voice \
#     alert2voice:0.1.0
#
# The config must set `store.path: /var/lib/alert2voice/alert2voice.db` (the volume) and listen on
# 0.0.0.0:9095 (the default when `server.listen` is omitted). The image writes nowhere but that
# volume and /tmp, so it runs with a read-only root filesystem.
#
# scripts/deploy-check.sh and tests/test_deploy.py replay the RUN and COPY steps below without Docker:
# keep every build step a plain `python`/`pip` command on paths named here.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# The dependencies first, from the lock alone: every file's hash is checked (`make lock` writes it), and the
# layer stays cached until the lock changes. Every dependency ships binary wheels for amd64 and arm64, so no
# compiler is needed, in this stage or the next (--only-binary makes sure of it).
COPY requirements.lock ./
RUN python -m venv /opt/alert2voice \
    && /opt/alert2voice/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock

# Then the project, built as a wheel so the venv holds an ordinary install, not a link to /src, and installed
# without its dependencies: they all come from the lock, and `pip check` fails the build if the lock no
# longer satisfies the wheel's requirements. pip byte-compiles what it installs, so the read-only final
# image never writes .pyc files. (.dockerignore keeps the rest of the context out.)
COPY pyproject.toml README.md ./
COPY alert2voice ./alert2voice
RUN /opt/alert2voice/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/alert2voice/bin/pip install --no-deps /tmp/wheels/alert2voice-*.whl \
    && /opt/alert2voice/bin/pip check \
    && /opt/alert2voice/bin/alert2voice --version

# ---------------------------------------------------------------------------------------------- final
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="alert2voice" \
      org.opencontainers.image.description="Prometheus Alertmanager notifications as phone calls through the Webex Connect Voice API v1" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# A fixed numeric user, so Kubernetes' runAsNonRoot can check it, and a state directory it owns.
RUN groupadd --system --gid 10001 alert2voice \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/alert2voice --shell /usr/sbin/nologin alert2voice \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/alert2voice \
    && install -d -m 0755 /etc/alert2voice

COPY --from=build /opt/alert2voice /opt/alert2voice

ENV PATH=/opt/alert2voice/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ALERT2VOICE_HEALTHCHECK_URL=http://127.0.0.1:9095/-/healthy

VOLUME ["/var/lib/alert2voice"]
WORKDIR /var/lib/alert2voice
USER 10001:10001
EXPOSE 9095

# No curl in slim images: the venv's Python asks /-/healthy (any non-2xx or error exits 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['ALERT2VOICE_HEALTHCHECK_URL'], timeout=4)"]

# SIGTERM: webhooks get 503 (Alertmanager retries), in-flight provider requests get server.shutdown_grace
# (10s by default): give `docker stop` / terminationGracePeriodSeconds more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["alert2voice"]
CMD ["serve", "--config", "/etc/alert2voice/config.yaml"]
