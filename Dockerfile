# One image for every carbonlink service of the stack; docker-compose.yml picks the command
# (carbonlink simulate | agent | platform | coordinate). Python 3.11: the oldest version
# pyproject.toml allows, the one CI tests on.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# jemalloc: `carbonlink platform` runs on it where it is installed (platform.allocator,
# docs/performance.md "Flat memory": its memory stays flat when the cores are busy).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libjemalloc2 \
 && rm -rf /var/lib/apt/lists/*

# The package before the config, so editing a plant file does not reinstall anything.
# README.md is the package's long description (pyproject.toml: readme).
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install .

# The compose file mounts ./config over this copy; it is here so the image runs alone too.
COPY config ./config

# Outboxes, spill files and the coordination ledger live in /var/lib/carbonlink. A new
# named volume mounted there takes this directory's owner, so the unprivileged user can
# write to it.
RUN useradd --system --uid 10001 --no-create-home --home-dir /var/lib/carbonlink carbonlink \
 && mkdir -p /var/lib/carbonlink/outbox \
 && chown -R carbonlink:carbonlink /var/lib/carbonlink
USER carbonlink

ENV CARBONLINK_CONFIG=/app/config/stack/carbonlink.yaml
CMD ["carbonlink", "--help"]
