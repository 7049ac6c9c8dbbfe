# syntax=docker/dockerfile:1
# One image for both roles: `sluice serve` (the webhook bot, the default) and
# `sluice puller` (the in-cluster agent). Build: docker build -t sluice:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: install Sluice and every runtime dependency into a venv
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/sluice
WORKDIR /src
# The project itself: pip resolves [project].dependencies from pyproject.toml,
# so the image always carries exactly what the package declares.
COPY pyproject.toml README.md ./
COPY bot/ bot/
RUN /opt/sluice/bin/pip install . \
    && /opt/sluice/bin/sluice --version

# --- runtime: slim Python, the tools git signing needs, no build leftovers
FROM ${PYTHON_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends git gnupg openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 sluice \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sluice \
       --shell /usr/sbin/nologin sluice \
    && mkdir -p /var/lib/sluice \
    && chown 10001:10001 /var/lib/sluice
COPY --from=builder /opt/sluice /opt/sluice
# The default policy library (also the reference for `sluice policy test`).
COPY policies/ /opt/sluice/policies/
ENV PATH=/opt/sluice/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    SLUICE_DATA_DIR=/var/lib/sluice
WORKDIR /var/lib/sluice
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]
ENTRYPOINT ["sluice"]
CMD ["serve"]
