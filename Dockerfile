# Images of the two binaries (not built by the test suite: the machines it runs on have no
# container engine). docker build --target oms-runtime -t <registry>/oms-runtime:<tag> .
#                     docker build --target oms-operator -t <registry>/oms-operator:<tag> .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      cmake libcurl4-openssl-dev libssl-dev libsasl2-dev libzstd-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p oms-runtime -p operator \
    && cp target/release/oms-runtime target/release/oms-operator /usr/local/bin/

FROM debian:bookworm-slim AS base
RUN apt-get update && apt-get install -y --no-install-recommends \
      ca-certificates libcurl4 libssl3 libsasl2-2 libzstd1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin oms
USER 65532:65532

FROM base AS oms-operator
COPY --from=build /usr/local/bin/oms-operator /usr/local/bin/oms-operator
ENTRYPOINT ["/usr/local/bin/oms-operator"]
CMD ["run"]

FROM base AS oms-runtime
# DocumentDB's TLS certificates chain to the RDS CAs, which no public trust store holds.
ADD --chmod=644 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /etc/ssl/certs/rds-global-bundle.pem
COPY --from=build /usr/local/bin/oms-runtime /usr/local/bin/oms-runtime
ENTRYPOINT ["/usr/local/bin/oms-runtime"]
