# One image for every process of the platform; the command picks the process:
#   payment-svc (default), payment-svc migrate, webhook-gateway, reconciler,
#   provider-sim, payments.
# Built elsewhere (no Docker engine on the development machines):
#   docker build -t REGISTRY/payments-platform:TAG .
# The build stage has the full Debian toolchain, in case a dependency has no
# wheel for the platform; the final stage has no compiler, only the venv.

ARG PYTHON_VERSION=3.11
ARG DEBIAN_RELEASE=bookworm

FROM python:${PYTHON_VERSION}-${DEBIAN_RELEASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
# The dependencies first, from the lock (scripts/lock): exact versions, each
# file checked against its hash, nothing resolved at build time. This layer is
# rebuilt only when the lock changes.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
# The project alone (--no-deps: the lock has installed all it needs, and
# scripts/check-install proves that in CI). Not editable, and compiled to
# bytecode here: the root filesystem is read-only at run time, so Python could
# not write .pyc files then.
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -m compileall -q /opt/venv

FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE}
LABEL org.opencontainers.image.title="payments-platform" \
      org.opencontainers.image.description="payment-svc, webhook-gateway, reconciler, provider-sim and the payments CLI"
# tini as PID 1 forwards SIGTERM to the process (drain) and reaps children.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.* \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 payments \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin payments
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
# payment-svc gRPC and metrics, webhook-gateway, reconciler metrics, provider-sim.
EXPOSE 50051 9101 8080 9102 12111
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["payment-svc"]
