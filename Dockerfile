# Strata broker image: `docker build -t strata .`
# Build stage: the release binary (librdkafka, a dependency of the
# benchmark tools built into it, needs a C toolchain).
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential perl pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY vendor vendor
COPY src src
RUN cargo build --release --locked --bin strata

# Runtime stage: the binary, CA certificates (S3 over TLS), an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/strata --create-home strata
COPY --from=build /src/target/release/strata /usr/local/bin/strata
USER strata
WORKDIR /var/lib/strata
# Kafka protocol, HTTP (/health, /metrics). The Kafka listener defaults to
# PLAINTEXT://0.0.0.0:9092; set STRATA_KAFKA_ADDR or STRATA_LISTENERS to
# change it.
EXPOSE 9092 9644
ENV STRATA_DATA_DIR=/var/lib/strata \
    STRATA_HTTP_ADDR=0.0.0.0:9644
ENTRYPOINT ["/usr/local/bin/strata"]
CMD ["serve"]
