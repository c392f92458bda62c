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
ENTRYPOINT ["/usr/local/bin/oms-runtime"]
