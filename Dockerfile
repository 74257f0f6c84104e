# ipam: the service image (`ipam serve` by default; `ipam migrate`, `ipam pools import FILE`).
#
# Two stages: `build` turns the project and every dependency into wheels, the final stage
# installs them into /opt/venv from a read-only bind mount of those wheels, so neither the
# wheels nor pip's cache nor any build tool ends up in a layer of the shipped image.
# `RUN --mount` needs BuildKit (the default builder since Docker Engine 23; docker-compose 1.29
# hands builds to the docker CLI by default).
#
# The base is pinned to an exact patch release; pin its digest too (`@sha256:...`) where your
# registry policy wants byte-for-byte reproducible builds.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is built from (see .dockerignore): the package, its migrations (shipped as
# ipam.migrations) and the metadata; README.md is the wheel's long description.
COPY pyproject.toml README.md ./
COPY ipam ./ipam
COPY migrations ./migrations
# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed here; if
# one ever falls back to an sdist, install build-essential in this stage, never in the final one.
RUN python -m pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG IPAM_UID=10001
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# A fixed numeric UID/GID so Kubernetes' runAsNonRoot/runAsUser can verify it without /etc/passwd.
RUN groupadd --system --gid "${IPAM_UID}" ipam \
 && useradd --system --uid "${IPAM_UID}" --gid "${IPAM_UID}" --home-dir /home/ipam \
        --create-home --shell /usr/sbin/nologin ipam
# The venv has no pip of its own: the base image's pip installs into it (--python), offline,
# from the wheels built above and only those.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/venv \
 && python -m pip --python /opt/venv/bin/python install --no-index --find-links=/wheels ipam \
 && ipam version --client
LABEL org.opencontainers.image.title="ipam" \
      org.opencontainers.image.description="Fixed pod IPs for Kubernetes (galaxy-ipam compatible scheduler extender)" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /home/ipam
USER 10001:10001
EXPOSE 9040
# Liveness only (the process answers); /readyz, which also checks the database, is what the
# orchestrator's readiness probe uses. Honours IPAM_PORT when it is overridden.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/healthz' % os.environ.get('IPAM_PORT', '9040'); sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)"]
ENTRYPOINT ["ipam"]
CMD ["serve"]
