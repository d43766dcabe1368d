# Redis with high availability for scripts/services.sh (REDIS_TOPOLOGY=sentinel): a primary,
# a replica and three Sentinels (Debian's redis-sentinel) on 127.0.0.1. Sourced by
# services.sh, whose helpers (log, die, owned_pid, stop_pid, ensure_redis, ...) it uses.
#
# Environment (besides services.sh's):
#   REDIS_PORT (6379) and REDIS_REPLICA_PORT (REDIS_PORT+1): the two data nodes; the first
#     `up` makes REDIS_PORT the primary, later starts follow the Sentinels' current primary
#   SENTINEL_PORT (REDIS_PORT+20000): the first of three Sentinels (+0, +1, +2), quorum 2
#   REDIS_MASTER_NAME (bridge): the name the Sentinels monitor the primary under
#   REDIS_PASSWORD: when set, both data nodes require it (requirepass and masterauth)
#   SENTINEL_PASSWORD: when set, the Sentinels require it (requirepass)
#   SENTINEL_DOWN_AFTER_MS (2000), SENTINEL_FAILOVER_TIMEOUT_MS (10000): how soon a silent
#     primary is taken for down, how long a failover may take before another is tried
#
# Commands: up, down, status, stop-redis, start-redis, restart-redis act on all five
# processes; `redis-primary` prints the current primary as host:port; `redis-url` prints the
# Celery broker URL that reaches it through the Sentinels.

REDIS_REPLICA_PORT="${REDIS_REPLICA_PORT:-$((REDIS_PORT + 1))}"
SENTINEL_PORT="${SENTINEL_PORT:-$((REDIS_PORT + 20000))}"
REDIS_MASTER_NAME="${REDIS_MASTER_NAME:-bridge}"
REDIS_PASSWORD="${REDIS_PASSWORD:-}"
SENTINEL_PASSWORD="${SENTINEL_PASSWORD:-}"
SENTINEL_DOWN_AFTER_MS="${SENTINEL_DOWN_AFTER_MS:-2000}"
SENTINEL_FAILOVER_TIMEOUT_MS="${SENTINEL_FAILOVER_TIMEOUT_MS:-10000}"
SENTINEL_PORTS=("$SENTINEL_PORT" "$((SENTINEL_PORT + 1))" "$((SENTINEL_PORT + 2))")
DATA_PORTS=("$REDIS_PORT" "$REDIS_REPLICA_PORT")

ensure_sentinel() {
    ensure_redis
    command -v redis-sentinel >/dev/null 2>&1 || apt_install redis-sentinel
}

node_home() { printf '%s/redis-%s\n' "$SERVICES_DIR" "$1"; }
sentinel_home() { printf '%s/sentinel-%s\n' "$SERVICES_DIR" "$1"; }
node_pid() { owned_pid "$(node_home "$1")/redis.pid" "redis-server"; }
sentinel_pid() { owned_pid "$(sentinel_home "$1")/sentinel.pid" "sentinel"; }

# redis-cli against port $1 with password $2 (may be empty), the rest as the command.
cli_at() {
    local port="$1" password="$2"
    shift 2
    REDISCLI_AUTH="$password" redis-cli --no-auth-warning -h "$REDIS_HOST" -p "$port" "$@" 2>/dev/null
}

node_cli() { cli_at "$1" "$REDIS_PASSWORD" "${@:2}"; }
sentinel_cli() { cli_at "$1" "$SENTINEL_PASSWORD" "${@:2}"; }

# The primary's port as the first Sentinel that answers names it, else as the last Sentinel
# configuration on disk remembers it (Sentinels rewrite their file after a failover), else
# REDIS_PORT: a node that was promoted keeps its role across `down` and `up`.
primary_port() {
    local port addr conf
    for port in "${SENTINEL_PORTS[@]}"; do
        addr="$(sentinel_cli "$port" SENTINEL get-master-addr-by-name "$REDIS_MASTER_NAME" | tail -n 1)"
        if [[ "$addr" =~ ^[0-9]+$ ]]; then printf '%s\n' "$addr"; return; fi
    done
    for port in "${SENTINEL_PORTS[@]}"; do
        conf="$(sentinel_home "$port")/sentinel.conf"
        addr="$(awk -v n="$REDIS_MASTER_NAME" '$1 == "sentinel" && $2 == "monitor" && $3 == n {print $5}' \
            "$conf" 2>/dev/null | tail -n 1)"
        if [[ "$addr" =~ ^[0-9]+$ ]]; then printf '%s\n' "$addr"; return; fi
    done
    printf '%s\n' "$REDIS_PORT"
}

wait_until() {  # wait_until TIMEOUT WHAT COMMAND...: poll COMMAND every 0.1 s
    local timeout="$1" what="$2" deadline
    deadline=$(( $(now) + timeout ))
    shift 2
    until "$@"; do
        (( $(now) < deadline )) || die "$what within ${timeout}s"
        sleep 0.1
    done
}

node_answers() { [[ "$(node_cli "$1" ping)" == PONG ]]; }
sentinel_answers() { [[ "$(sentinel_cli "$1" ping)" == PONG ]]; }

# Start data node $1, as a replica of $2 unless it is $2 itself. The password goes in a file
# of the node's own, not on a command line that `ps` shows.
node_up() {
    local port="$1" primary="$2" home pid
    home="$(node_home "$port")"
    pid="$(node_pid "$port")"
    if [[ -n "$pid" ]]; then log "redis already up on $REDIS_HOST:$port (pid $pid)"; return; fi
    if port_open "$REDIS_HOST" "$port"; then
        die "port $port is already in use by a process this script did not start"
    fi
    mkdir -p "$home/data"
    {
        printf 'port %s\nbind %s\nappendonly yes\nmaxmemory-policy noeviction\n' "$port" "$REDIS_HOST"
        printf 'dir %s/data\ndaemonize yes\npidfile %s/redis.pid\nlogfile %s/redis.log\n' \
            "$home" "$home" "$home"
        if [[ "$port" != "$primary" ]]; then printf 'replicaof %s %s\n' "$REDIS_HOST" "$primary"; fi
        if [[ -n "$REDIS_PASSWORD" ]]; then
            printf 'requirepass %s\nmasterauth %s\n' "$REDIS_PASSWORD" "$REDIS_PASSWORD"
        fi
    } >"$home/redis.conf"
    chmod 600 "$home/redis.conf"
    redis-server "$home/redis.conf" </dev/null >/dev/null \
        || die "redis-server failed to start on $port (see $home/redis.log)"
    wait_until "$REDIS_START_TIMEOUT" "redis did not answer on $port" node_answers "$port"
    log "redis up on $REDIS_HOST:$port ($( [[ "$port" == "$primary" ]] && echo primary || echo "replica of $primary"))"
}

# A Sentinel's file is written afresh on each start, monitoring the current primary: the
# running Sentinels tell it the rest (replicas, other Sentinels, the epoch) within seconds.
write_sentinel_config() {
    local port="$1" primary="$2" home
    home="$(sentinel_home "$port")"
    mkdir -p "$home"
    {
        printf 'port %s\nbind %s\ndaemonize yes\n' "$port" "$REDIS_HOST"
        printf 'pidfile %s/sentinel.pid\nlogfile %s/sentinel.log\ndir %s\n' "$home" "$home" "$home"
        printf 'sentinel monitor %s %s %s 2\n' "$REDIS_MASTER_NAME" "$REDIS_HOST" "$primary"
        printf 'sentinel down-after-milliseconds %s %s\n' "$REDIS_MASTER_NAME" "$SENTINEL_DOWN_AFTER_MS"
        printf 'sentinel failover-timeout %s %s\n' "$REDIS_MASTER_NAME" "$SENTINEL_FAILOVER_TIMEOUT_MS"
        printf 'sentinel parallel-syncs %s 1\n' "$REDIS_MASTER_NAME"
        if [[ -n "$REDIS_PASSWORD" ]]; then
            printf 'sentinel auth-pass %s %s\n' "$REDIS_MASTER_NAME" "$REDIS_PASSWORD"
        fi
        if [[ -n "$SENTINEL_PASSWORD" ]]; then printf 'requirepass %s\n' "$SENTINEL_PASSWORD"; fi
    } >"$home/sentinel.conf"
    chmod 600 "$home/sentinel.conf"
}

sentinel_up() {
    local port="$1" primary="$2" pid
    pid="$(sentinel_pid "$port")"
    if [[ -n "$pid" ]]; then log "sentinel already up on $REDIS_HOST:$port (pid $pid)"; return; fi
    if port_open "$REDIS_HOST" "$port"; then
        die "port $port is already in use by a process this script did not start"
    fi
    write_sentinel_config "$port" "$primary"
    redis-sentinel "$(sentinel_home "$port")/sentinel.conf" </dev/null >/dev/null \
        || die "redis-sentinel failed to start on $port (see $(sentinel_home "$port")/sentinel.log)"
    wait_until "$REDIS_START_TIMEOUT" "sentinel did not answer on $port" sentinel_answers "$port"
    log "sentinel up on $REDIS_HOST:$port (monitoring $REDIS_MASTER_NAME at $REDIS_HOST:$primary)"
}

topology_up() {
    local primary port
    ensure_sentinel
    primary="$(primary_port)"
    node_up "$primary" "$primary"
    for port in "${DATA_PORTS[@]}"; do
        if [[ "$port" != "$primary" ]]; then node_up "$port" "$primary"; fi
    done
    for port in "${SENTINEL_PORTS[@]}"; do sentinel_up "$port" "$primary"; done
}

# Sentinels first, so that stopping the primary does not start a failover.
topology_down() {
    local port pid
    for port in "${SENTINEL_PORTS[@]}"; do
        pid="$(sentinel_pid "$port")"
        if [[ -n "$pid" ]]; then stop_pid "$pid" "sentinel $port" "$REDIS_STOP_TIMEOUT"; fi
    done
    for port in "${DATA_PORTS[@]}"; do
        pid="$(node_pid "$port")"
        if [[ -n "$pid" ]]; then stop_pid "$pid" "redis $port" "$REDIS_STOP_TIMEOUT"; fi
    done
    log "redis (sentinel topology on ${DATA_PORTS[*]}, sentinels ${SENTINEL_PORTS[*]}) down"
}

topology_status() {
    local port pid role rc=0
    for port in "${DATA_PORTS[@]}"; do
        pid="$(node_pid "$port")"
        role="$(node_cli "$port" INFO replication | tr -d '\r' | sed -n 's/^role://p')"
        if [[ -n "$pid" && -n "$role" ]]; then
            printf 'redis     up    %s:%s  pid %s  (%s)\n' "$REDIS_HOST" "$port" "$pid" "$role"
        else
            printf 'redis     down  %s:%s  pid %s\n' "$REDIS_HOST" "$port" "${pid:--}"; rc=3
        fi
    done
    for port in "${SENTINEL_PORTS[@]}"; do
        pid="$(sentinel_pid "$port")"
        if [[ -n "$pid" ]] && sentinel_answers "$port"; then
            printf 'sentinel  up    %s:%s  pid %s\n' "$REDIS_HOST" "$port" "$pid"
        else
            printf 'sentinel  down  %s:%s  pid %s\n' "$REDIS_HOST" "$port" "${pid:--}"; rc=3
        fi
    done
    printf 'primary   %s:%s  (%s)\n' "$REDIS_HOST" "$(primary_port)" "$REDIS_MASTER_NAME"
    return "$rc"
}

# The broker URL as Celery and kombu take it; master_name goes in the transport options.
topology_url() {
    local port urls=() auth=""
    if [[ -n "$REDIS_PASSWORD" ]]; then auth=":$REDIS_PASSWORD@"; fi
    for port in "${SENTINEL_PORTS[@]}"; do urls+=("sentinel://$auth$REDIS_HOST:$port/0"); done
    (IFS=';'; printf '%s\n' "${urls[*]}")
}

sentinel_cmd() {
    case "$1" in
        up)            topology_up; kafka_up ;;
        down)          kafka_down; topology_down ;;
        status)        local rc=0; kafka_status || rc=3; topology_status || rc=3; return "$rc" ;;
        stop-redis)    topology_down ;;
        start-redis)   topology_up ;;
        restart-redis) topology_down; topology_up ;;
        stop-kafka)    kafka_down ;;
        start-kafka)   kafka_up ;;
        redis-primary) printf '%s:%s\n' "$REDIS_HOST" "$(primary_port)" ;;
        redis-url)     topology_url ;;
    esac
}
