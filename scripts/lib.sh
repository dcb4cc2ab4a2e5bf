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
