# shopmesh: one binary, one target per container (`serve --target all|gateway|user`, `migrate`, `admin`).
#
#   docker build -t shopmesh .
#   docker run --rm -e JWT_PRIVATE_KEY_PEM="$(cat key.pem)" ... shopmesh serve --target gateway
#
# Works with the classic builder and with BuildKit (no RUN --mount).

# --- planner: reduce the source tree to manifests + empty targets --------------------------
# The skeleton only changes when a Cargo.toml or Cargo.lock changes, so the dependency layer
# in the builder below stays cached across ordinary source edits (COPY caches by content).
FROM rust:1-bookworm AS planner
WORKDIR /src
COPY . .
RUN set -eu; \
    mkdir -p /skeleton; \
    cp Cargo.lock /skeleton/; \
    find . -path ./target -prune -o -name Cargo.toml -print | while read -r manifest; do \
        dir=$(dirname "$manifest"); \
        mkdir -p "/skeleton/$dir/src"; \
        cp "$manifest" "/skeleton/$manifest"; \
        if [ -f "$dir/src/lib.rs" ]; then : > "/skeleton/$dir/src/lib.rs"; fi; \
        if [ -f "$dir/src/main.rs" ]; then echo 'fn main() {}' > "/skeleton/$dir/src/main.rs"; fi; \
        if [ -f "$dir/build.rs" ]; then echo 'fn main() {}' > "/skeleton/$dir/build.rs"; fi; \
    done

# --- builder -----------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0

# 1. Dependencies only (cached until a manifest or the lock file changes).
COPY --from=planner /skeleton/ ./
RUN cargo build --release --locked -p shopmesh --bin shopmesh

# 2. The real sources. COPY keeps the build context's mtimes, which can be older than the
#    stub artifacts from step 1; touch them so cargo rebuilds every workspace crate.
COPY . .
RUN find . -path ./target -prune -o \( -name '*.rs' -o -name '*.proto' \) -exec touch {} + \
    && cargo build --release --locked -p shopmesh --bin shopmesh \
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
    METRICS_ADDR=0.0.0.0:9464
WORKDIR /app
USER 10001:10001
# gateway (REST + its /metrics), user gRPC, /metrics of processes without a gateway
EXPOSE 8081 50051 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/shopmesh"]
CMD ["serve", "--target", "all"]
