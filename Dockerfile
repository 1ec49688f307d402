# Sluice's image: `sluice serve` as the entrypoint; flags go in the container's command,
# settings in SLUICE_* variables or a TOML file passed with --config (see compose.yaml).
#
# SIGTERM (`docker stop`) drains within one budget, drain_timeout_s, then takes at most 30 s
# more to stop what did not finish (broker/defaults.py SHUTDOWN_CLEANUP_S): give the
# container a stop timeout that covers both (compose: stop_grace_period). Python runs as
# PID 1 safely here: `serve` installs its own SIGTERM/SIGINT handlers. Run with an init
# (compose `init: true`, `docker run --init`) so that python: targets' worker processes
# are reaped whatever happens to them.

FROM python:3.11-slim-bookworm AS build
RUN python -m venv /opt/venv
WORKDIR /src
# README.md is the package's long description (pyproject.toml `readme`).
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY pollers ./pollers
COPY destinations ./destinations
# aws: boto3 (SQS/Kinesis/DynamoDB sources, AWS destinations, lambda: targets);
# amqp: kombu (RabbitMQ sources and destinations).
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ".[aws,amqp]"

FROM python:3.11-slim-bookworm
# A fixed uid/gid, so volume permissions and Kubernetes' runAsNonRoot work without a lookup.
RUN groupadd --system --gid 10001 sluice \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin sluice
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Listen on every interface of the container (the default, 127.0.0.1, is unreachable).
ENV SLUICE_HOST=0.0.0.0
USER 10001:10001
EXPOSE 9070
STOPSIGNAL SIGTERM
# No curl in the image: Python asks /healthz (200 while Redis answers PING).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SLUICE_PORT', '9070'), timeout=2)"]
ENTRYPOINT ["sluice", "serve"]
