# shopmesh: one binary, one target per container (`serve --target all|gateway|user|product`, `migrate`, `seed`, `admin`).
#
#   docker build -t shopmesh .
#   docker run --rm -e JWT_PRIVATE_KEY_PEM="$(cat key.pem)" ... shopmesh serve --target gateway
#

# --- builder -----------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0
COPY . .
RUN cargo build --release --locked -p shopmesh --bin shopmesh \
    && install -m 0755 target/release/shopmesh /usr/local/bin/shopmesh

# --- runtime -----------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 shopmesh \
    && useradd --system --uid 10001 --gid shopmesh --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin shopmesh
COPY --from=builder /usr/local/bin/shopmesh /usr/local/bin/shopmesh

# Containers listen on all interfaces; everything else comes from the environment (.env.example).
ENV LOG_FORMAT=json \
    GATEWAY_ADDR=0.0.0.0:8081 \
    USER_GRPC_ADDR=0.0.0.0:50051 \
    PRODUCT_GRPC_ADDR=0.0.0.0:50052 \
    METRICS_ADDR=0.0.0.0:9464
WORKDIR /app
USER 10001:10001
# gateway (REST + its /metrics), user and product gRPC, /metrics of processes without a gateway
EXPOSE 8081 50051 50052 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/shopmesh"]
CMD ["serve", "--target", "all"]
