# syntax=docker/dockerfile:1
# Images of the two binaries.
#   docker build --target oms-runtime -t <registry>/oms-runtime:<tag> .
#   docker build --target oms-operator -t <registry>/oms-operator:<tag> .
# scripts/images builds the same targets with podman and no registry: it makes the two base
# images locally and passes them as RUST_IMAGE and DEBIAN_IMAGE (docs/deployment-guide.md).
ARG RUST_IMAGE=rust:1.95-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim
# download: the runtime image carries the RDS CA bundle (DocumentDB's TLS chains to it, and no
# public trust store holds it). none: leave it out, for builds with no route to AWS; such an
# image cannot reach DocumentDB over TLS.
ARG RDS_CA_BUNDLE=download
# build: the web UI is built here with Node (npm ci from ui/package-lock.json). prebuilt: it is
# copied from ui/dist, built beforehand by scripts/ui build (builds with no Node image).
ARG NODE_IMAGE=node:20-bookworm-slim
ARG UI=build

FROM ${RUST_IMAGE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      cmake libcurl4-openssl-dev libssl-dev libsasl2-dev libzstd-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The caches live in the builder (BuildKit or buildah), so a rebuild compiles only what changed.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p oms-runtime -p operator \
    && cp target/release/oms-runtime target/release/oms-operator /usr/local/bin/ \
    && strip --strip-debug /usr/local/bin/oms-runtime /usr/local/bin/oms-operator
# (The line tables go, a fifth of the size stays: backtraces still name every function.)

FROM ${NODE_IMAGE} AS ui-build
WORKDIR /ui
COPY ui/package.json ui/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY ui/ ./
RUN npm run build

FROM scratch AS ui-prebuilt
COPY ui/dist/ /ui/dist/

FROM ui-${UI} AS ui

FROM ${DEBIAN_IMAGE} AS base
RUN apt-get update && apt-get install -y --no-install-recommends \
      ca-certificates libcurl4 libssl3 libsasl2-2 libzstd1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin oms
USER 65532:65532

FROM scratch AS rds-ca-download
ADD --chmod=644 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /rds/rds-global-bundle.pem

FROM base AS rds-ca-none
USER root
RUN mkdir /rds

FROM rds-ca-${RDS_CA_BUNDLE} AS rds-ca

FROM base AS oms-operator
COPY --from=build /usr/local/bin/oms-operator /usr/local/bin/oms-operator
ENTRYPOINT ["/usr/local/bin/oms-operator"]
CMD ["run"]

FROM base AS oms-runtime
COPY --from=rds-ca /rds/ /etc/ssl/certs/
COPY --from=build /usr/local/bin/oms-runtime /usr/local/bin/oms-runtime
# The web UI, served at / on the API port of single-node and ingest pods.
COPY --from=ui /ui/dist/ /usr/share/oms/ui/
ENV OMS_UI_DIR=/usr/share/oms/ui
ENTRYPOINT ["/usr/local/bin/oms-runtime"]
