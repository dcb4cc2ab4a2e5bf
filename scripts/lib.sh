# Shared by scripts/up and scripts/test: install what a fresh machine lacks, start what is not
# running. Everything installed here lands in .tools/ (git-ignored) or comes from Debian.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=$ROOT/.tools
RUN=$ROOT/.run
SECANTUSDB_VERSION=0.7.0b3

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
    if [ -z "${APT_UPDATED:-}" ]; then
        log "apt-get update"
        apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_nginx() {
    if ! have nginx && [ ! -x /usr/sbin/nginx ]; then apt_install nginx; fi
    export NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
}

ensure_python_tools() {
    # "$@": extra packages. The MongoDB wire-protocol server is always installed.
    local venv=$TOOLS/venv
    if [ ! -x "$venv/bin/python" ]; then
        log "creating $venv"
        python3 -m venv "$venv"
    fi
    local want=("secantusdb==$SECANTUSDB_VERSION" "$@") missing=()
    for pkg in "${want[@]}"; do
        "$venv/bin/pip" show -q "${pkg%%=*}" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "pip install ${missing[*]}"
        "$venv/bin/pip" install -q --disable-pip-version-check "${missing[@]}"
    fi
}

ensure_buf() {
    BUF=$TOOLS/npm/node_modules/.bin/buf
    if [ ! -x "$BUF" ]; then
        log "npm install @bufbuild/buf"
        mkdir -p "$TOOLS/npm"
        (cd "$TOOLS/npm" && npm_config_loglevel=error npm install --no-audit --no-fund --silent @bufbuild/buf >/dev/null)
    fi
    export BUF
}

# Debian's Chromium, for the storefront and console tests (tests/ui drives it headless).
ensure_chromium() {
    if [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi
    export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
}

# The Node package of the browser tests (playwright-core only, from its lock file), installed
# again when package-lock.json is newer than the last install.
ensure_ui_tests() {
    local pkg=$ROOT/tests/ui stamp=$ROOT/tests/ui/node_modules/.package-lock.json
    if [ ! -f "$pkg/node_modules/playwright-core/package.json" ] || [ "$pkg/package-lock.json" -nt "$stamp" ]; then
        log "npm ci --prefix tests/ui"
        npm_config_loglevel=error npm ci --prefix "$pkg" --no-audit --no-fund --silent >/dev/null
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port=$1 what=$2
    for _ in $(seq 1 100); do
        port_open "$port" && return 0
        sleep 0.2
    done
    echo "$what did not come up on port $port" >&2
    return 1
}

# Starts PostgreSQL, Redis and RabbitMQ when they are not running.
ensure_services() {
    if ! port_open 5432; then
        log "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
        wait_port 5432 PostgreSQL
    fi
    if ! port_open 6379; then
        log "starting Redis"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log
        wait_port 6379 Redis
    fi
    if ! port_open 5672; then
        log "starting RabbitMQ"
        rabbitmq-server -detached
        until rabbitmqctl -q await_startup >/dev/null 2>&1; do sleep 1; done
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts the MongoDB wire-protocol server (SecantusDB) as the local MongoDB; sets MONGO_PID and
# exports MONGODB_URL. $1: storage path (":memory:" for a throwaway one), $2: port.
start_local_mongo() {
    local storage=$1 port=$2
    ensure_python_tools
    [ "$storage" = ":memory:" ] || mkdir -p "$storage"
    "$TOOLS/venv/bin/secantusd-py" --host 127.0.0.1 --port "$port" --storage-path "$storage" \
        >"$RUN/mongo.log" 2>&1 &
    MONGO_PID=$!
    wait_port "$port" "the MongoDB wire-protocol server"
    export MONGODB_URL="mongodb://127.0.0.1:$port"
}

load_dotenv() {
    if [ -f "$ROOT/.env" ]; then
        set -a
        # shellcheck disable=SC1091
        . "$ROOT/.env"
        set +a
    fi
}

# Starts the whole system for a black-box run (scripts/fuzz, scripts/attack): every target of the
# debug build in one process, each service's gRPC server on its own free port, nginx in front, on
# fresh databases, and waits until the edge is ready. Installs an EXIT trap that stops it all.
#   start_stack NAME [IP_RATE IP_BURST]
#   NAME      prefix of the databases, the Redis keys, the admin's email and the logs in $RUN
#   IP_RATE   gateway per-IP rate limit, requests per second (default 100000: out of the way)
#   IP_BURST  gateway per-IP burst (default 100000)
# Extra gateway settings (HEADER_READ_TIMEOUT_MS, TRUSTED_PROXIES, ...) are taken from the
# caller's environment. Needs MONGODB_URL. Sets: STACK_BIN, STACK_RUN_DIR (its SHOPMESH_RUN_DIR),
# STACK_PID, STACK_LOG (the shopmesh log), EDGE (http://host:port of nginx), GATEWAY (same, of the
# gateway), GATEWAY_PORT, EDGE_PORT, GRPC_<SERVICE> (host:port, e.g. GRPC_PRODUCT), ADMIN_EMAIL,
# ADMIN_PASSWORD and ADMIN_TOKEN (an admin's access token).
start_stack() {
    local name=$1 ip_rate=${2:-100000} ip_burst=${3:-100000}
    : "${MONGODB_URL:?MONGODB_URL must point at a MongoDB(-protocol) server}"
    ensure_nginx
    mkdir -p "$RUN"
    STACK_NAME=$name
    STACK_UNIQUE=$(python3 -c 'import uuid; print(uuid.uuid4().hex)')
    STACK_BIN=$ROOT/target/debug/shopmesh
    STACK_DIR=$(mktemp -d)
    STACK_RUN_DIR=$STACK_DIR/run
    STACK_LOG=$RUN/$name-shopmesh.log
    GATEWAY_PORT=$(free_port)
    EDGE_PORT=$(free_port)
    export SHOPMESH_PROFILE=dev LOG_FORMAT=json RUST_LOG=${RUST_LOG:-warn} SHOPMESH_RUN_DIR=$STACK_RUN_DIR
    export GATEWAY_ADDR=127.0.0.1:$GATEWAY_PORT METRICS_ADDR=127.0.0.1:$(free_port)
    # Every service of the binary's list on a free port of its own: in one process they find
    # each other, and callers (grpcurl) find them in GRPC_<SERVICE>.
    local svc _port _grpc addr
    while IFS=$'\t' read -r svc _port _grpc; do
        addr=127.0.0.1:$(free_port)
        export "${svc^^}_GRPC_ADDR=$addr"
        printf -v "GRPC_${svc^^}" '%s' "$addr"
    done < <("$STACK_BIN" services)
    # Its own database for every PostgreSQL service, its own Redis prefixes.
    local db
    for db in product order payment delivery; do
        export "${db^^}_DATABASE_URL=postgres://postgres@127.0.0.1:5432/${name}_${db}_$STACK_UNIQUE"
    done
    export MONGODB_DATABASE=${name}_$STACK_UNIQUE REDIS_KEY_PREFIX=$name:$STACK_UNIQUE:
    export CART_KEY_PREFIX=$name:$STACK_UNIQUE:cart:
    export RATE_LIMIT_IP_PER_SECOND=$ip_rate RATE_LIMIT_IP_BURST=$ip_burst
    export RATE_LIMIT_USER_PER_SECOND=100000 RATE_LIMIT_USER_BURST=100000
    "$STACK_BIN" serve --target all >"$STACK_LOG" 2>&1 &
    STACK_PID=$!
    STACK_NGINX_PID=
    trap stop_stack EXIT

    "$ROOT/scripts/render-nginx" "$STACK_DIR" "127.0.0.1:$EDGE_PORT" "127.0.0.1:$GATEWAY_PORT" 100000r/s 100000 >/dev/null
    "$NGINX_BIN" -p "$STACK_DIR" -c "$STACK_DIR/nginx.conf" -g 'daemon off;' 2>>"$RUN/$name-nginx.log" &
    STACK_NGINX_PID=$!
    EDGE=http://127.0.0.1:$EDGE_PORT
    GATEWAY=http://127.0.0.1:$GATEWAY_PORT
    for _ in $(seq 1 150); do
        curl -fs "$EDGE/readyz" >/dev/null 2>&1 && break
        sleep 0.2
    done
    curl -fs "$EDGE/readyz" >/dev/null || { cat "$STACK_LOG" >&2; return 1; }

    ADMIN_EMAIL=$name-admin@example.com
    ADMIN_PASSWORD=Fuzz-Admin-Password-1
    "$STACK_BIN" admin create --email "$ADMIN_EMAIL" --password "$ADMIN_PASSWORD" >/dev/null
    ADMIN_TOKEN=$(curl -fs "$EDGE/api/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    export EDGE GATEWAY GATEWAY_PORT EDGE_PORT ADMIN_EMAIL ADMIN_PASSWORD ADMIN_TOKEN STACK_BIN STACK_LOG
}

# The EXIT trap of start_stack: stops shopmesh and nginx, drops the stack's databases.
stop_stack() {
    [ -n "${STACK_PID:-}" ] && kill "$STACK_PID" 2>/dev/null && wait "$STACK_PID" 2>/dev/null
    if [ -n "${STACK_DIR:-}" ]; then
        "$NGINX_BIN" -p "$STACK_DIR" -c "$STACK_DIR/nginx.conf" -s quit 2>/dev/null || true
        [ -n "${STACK_NGINX_PID:-}" ] && wait "$STACK_NGINX_PID" 2>/dev/null
        rm -rf "$STACK_DIR"
    fi
    if [ -n "${STACK_UNIQUE:-}" ]; then
        local db
        for db in product order payment delivery; do
            dropdb -U postgres -h 127.0.0.1 --if-exists --force "${STACK_NAME}_${db}_$STACK_UNIQUE" 2>/dev/null || true
        done
    fi
    true
}
