# shopmesh: one binary, one target per container (`serve --target all|gateway|<service>`, `migrate`, `seed`, `admin`,
# `mesh-keys`; `shopmesh services` lists the services and their gRPC ports).
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
        --shell /usr/sbin/nologin shopmesh \
    && mkdir -p /mesh && chown 10001:10001 /mesh && chmod 0700 /mesh
COPY --from=builder /usr/local/bin/shopmesh /usr/local/bin/shopmesh

# Containers listen on all interfaces; everything else comes from the environment (.env.example).
# /mesh holds the service identity keys (a volume or mounted secrets).
ENV LOG_FORMAT=json \
    BIND_HOST=0.0.0.0 \
    MESH_KEYS_DIR=/mesh
WORKDIR /app
USER 10001:10001
# gateway (REST + its /metrics) and /metrics of processes without a gateway; each service's gRPC
# port is declared where it is deployed (docker-compose.yml is generated from the service list).
EXPOSE 8081 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/shopmesh"]
CMD ["serve", "--target", "all"]
