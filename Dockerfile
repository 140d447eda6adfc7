# wsgate: one image for every component; the pod (or `docker run`) names it:
#   docker build -t wsgate:0.1.0 .
#   docker run --rm -p 9090:9090 -p 9095:9095 wsgate:0.1.0 router
# Kubernetes manifests: deploy/kubernetes (deploy/README.md).
#
# The build stage mirrors the Makefile's `wsgate_proto/.generated` and install steps (the unit
# test tests/unit/deploy/test_manifests.py checks the two stay alike): generated gRPC code is
# built here, never copied from a checkout.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A C compiler for the relay core (router/_core, built by pip install); the runtime stays slim.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN pip install -q 'grpcio-tools>=1.70'
COPY proto ./proto
RUN rm -rf .proto-out && mkdir -p .proto-out \
    && python -m grpc_tools.protoc -Iproto --python_out=.proto-out --pyi_out=.proto-out \
        --grpc_python_out=.proto-out proto/wsgate_proto/*.proto \
    && touch .proto-out/wsgate_proto/__init__.py .proto-out/wsgate_proto/py.typed \
        .proto-out/wsgate_proto/.generated \
    && rm -rf wsgate_proto && mv .proto-out/wsgate_proto wsgate_proto && rm -rf .proto-out
COPY pyproject.toml setup.py README.md ./
COPY wsgate ./wsgate
COPY wsgate_common ./wsgate_common
COPY control_plane ./control_plane
COPY adapter ./adapter
COPY enforcer ./enforcer
COPY router ./router
# A virtualenv the runtime stage copies whole; the postgres and redis extras make the image work
# with the postgres-redis overlay too.
RUN python -m venv /opt/wsgate && /opt/wsgate/bin/pip install -q '.[postgres,redis]'

FROM python:3.11-slim
ENV PATH=/opt/wsgate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WSGATE_DATA_DIR=/var/lib/wsgate
RUN groupadd --system --gid 10001 wsgate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/wsgate --shell /usr/sbin/nologin wsgate \
    && mkdir -p /var/lib/wsgate && chown 10001:10001 /var/lib/wsgate
COPY --from=build /opt/wsgate /opt/wsgate
WORKDIR /var/lib/wsgate
VOLUME ["/var/lib/wsgate"]
# control plane, adapter REST / xDS / deploy, enforcer gRPC / HTTP, router ws / wss
EXPOSE 9443 9843 18000 18001 8081 8082 9090 9095
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
ENTRYPOINT ["wsgate"]
CMD ["--help"]
