#!/usr/bin/env bash
# Local backing services for kafka-celery-bridge: a single-node Apache Kafka
# (KRaft, combined broker+controller) and a Redis used as the Celery broker.
#
#   scripts/services.sh up|down|status|stop-redis|start-redis|restart-redis|stop-kafka|start-kafka
#   scripts/services.sh redis-primary|redis-url   where Redis is: host:port, the broker URL
#
# Without Docker (the default wherever `docker info` fails) both run as plain
# processes: Kafka's jars come from Maven Central via `mvn` and are cached under
# ${XDG_CACHE_HOME:-~/.cache}/kafka-celery-bridge/, redis-server comes from the
# Debian package (installed with apt-get when missing). Data, configs, logs and
# pid files live under <repo>/.services/.
#
# Environment:
#   KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (KAFKA_PORT+1), REDIS_PORT (6379)
#   KAFKA_SASL_PORT (KAFKA_PORT+2): SASL_PLAINTEXT listener (PLAIN, SCRAM-SHA-256/512)
#   KAFKA_SSL_PORT (KAFKA_PORT+3): SASL_SSL listener, same mechanisms, a self-signed CA
#     made once with openssl under <services dir>/kafka-<port>/tls/ (clients: tls/ca.pem)
#   KAFKA_SASL_USER (bridge), KAFKA_SASL_PASSWORD (bridge-secret): the one user of the
#     secured listeners (PLAIN and SCRAM), a local test credential, not a secret
#   SERVICES_MODE=auto|local|docker (auto), KAFKA_VERSION (pinned below)
#   KAFKA_START_TIMEOUT (90 s), KAFKA_HEAP_OPTS (-Xmx768m -Xms256m),
#   KAFKA_EXTRA_JVM_OPTS, SERVICES_DIR (<repo>/.services)
#   REDIS_TOPOLOGY=single|sentinel (single): `sentinel` runs a primary, a replica and three
#     Sentinels instead of one Redis; its own variables: scripts/services_sentinel.sh
set -euo pipefail

# Close what the caller let us inherit (e.g. the fd of a `flock` lock held around this script):
# the daemons started below would hold it for as long as they run. 255 is bash's own script fd.
for _fd in /proc/$$/fd/*; do
    _fd="${_fd##*/}"
    if (( _fd > 2 && _fd < 255 )); then eval "exec ${_fd}>&-" 2>/dev/null || true; fi
done
unset _fd

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
SCALA_VERSION="2.13"
LOG4J_VERSION="2.25.5"                 # the log4j2 version Kafka $KAFKA_VERSION itself depends on
DEPENDENCY_PLUGIN_VERSION="3.8.1"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_SASL_PORT="${KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}"
KAFKA_SSL_PORT="${KAFKA_SSL_PORT:-$((KAFKA_PORT + 3))}"
KAFKA_SASL_USER="${KAFKA_SASL_USER:-bridge}"
KAFKA_SASL_PASSWORD="${KAFKA_SASL_PASSWORD:-bridge-secret}"
REDIS_PORT="${REDIS_PORT:-6379}"
KAFKA_HOST="127.0.0.1"
REDIS_HOST="127.0.0.1"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
REDIS_START_TIMEOUT="${REDIS_START_TIMEOUT:-30}"
REDIS_STOP_TIMEOUT="${REDIS_STOP_TIMEOUT:-20}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx768m -Xms256m}"
KAFKA_EXTRA_JVM_OPTS="${KAFKA_EXTRA_JVM_OPTS:-}"
SERVICES_MODE="${SERVICES_MODE:-auto}"
REDIS_TOPOLOGY="${REDIS_TOPOLOGY:-single}"

SERVICES_DIR="${SERVICES_DIR:-$REPO_ROOT/.services}"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/kafka-celery-bridge"
KAFKA_DIST="$CACHE_ROOT/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_DIST/libs"
KAFKA_HOME="$SERVICES_DIR/kafka-$KAFKA_PORT"
KAFKA_PID_FILE="$KAFKA_HOME/kafka.pid"
KAFKA_LOG="$KAFKA_HOME/logs/server.log"
KAFKA_OUT="$KAFKA_HOME/logs/kafka.out"
KAFKA_TLS="$KAFKA_HOME/tls"
KAFKA_TLS_STORE_PASSWORD="kcb-local-keystore"   # guards a local self-signed key, no secret
REDIS_HOME="$SERVICES_DIR/redis-$REDIS_PORT"
REDIS_PID_FILE="$REDIS_HOME/redis.pid"
REDIS_LOG="$REDIS_HOME/redis.log"
COMPOSE_FILE="$REPO_ROOT/docker-compose.yml"

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- helpers

now() { date +%s; }

# Alive = exists and is not a zombie (a daemon reparented to a pid 1 that reaps
# lazily stays a zombie for a while after it exits).
pid_alive() {
    local state
    [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null || return 1
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || true
    [[ "$state" != Z && "$state" != X ]]
}

read_pid() { if [[ -s "$1" ]]; then tr -dc '0-9' <"$1"; fi; }

# pid from pid file $1, printed only if that process is alive and its command
# line contains $2 (guards against pid reuse after a reboot/crash).
owned_pid() {
    local pid
    pid="$(read_pid "$1")"
    if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"; then
        printf '%s\n' "$pid"
    fi
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# stop_pid PID NAME TIMEOUT: SIGTERM, wait up to TIMEOUT s, then SIGKILL.
stop_pid() {
    local pid="$1" name="$2" timeout="$3" deadline
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(( $(now) + timeout ))
    while pid_alive "$pid"; do
        if (( $(now) >= deadline )); then
            log "$name (pid $pid) still running after ${timeout}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "cannot install $* (no apt-get); install it by hand"
    local apt_log="$SERVICES_DIR/apt-install.log"
    mkdir -p "$SERVICES_DIR"
    log "installing $* with apt-get (log: $apt_log)"
    if ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
           as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
               --no-install-recommends "$@"; } >"$apt_log" 2>&1; then
        tail -n 20 "$apt_log" >&2
        die "apt-get install $* failed"
    fi
}

# ---------------------------------------------------------------- mode

docker_usable() {
    command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1
}

resolve_mode() {
    case "$SERVICES_MODE" in
        local|docker) ;;
        auto) if docker_usable; then SERVICES_MODE=docker; else SERVICES_MODE=local; fi ;;
        *) die "SERVICES_MODE must be auto, local or docker (got '$SERVICES_MODE')" ;;
    esac
}

compose() { docker compose -f "$COMPOSE_FILE" "$@"; }

docker_cmd() {
    docker_usable || die "SERVICES_MODE=docker but no Docker engine answers 'docker info'"
    export KAFKA_PORT REDIS_PORT
    case "$1" in
        up)            compose up -d --wait kafka redis ;;
        down)          compose stop kafka redis ;;
        status)        compose ps kafka redis
                       [[ $(compose ps --status running -q kafka redis | wc -l) -eq 2 ]] || exit 3 ;;
        stop-redis)    compose stop redis ;;
        start-redis)   compose up -d --wait redis ;;
        restart-redis) compose stop redis && compose up -d --wait redis ;;
        stop-kafka)    compose stop kafka ;;
        start-kafka)   compose up -d --wait kafka ;;
    esac
}

# ---------------------------------------------------------------- kafka

java_bin() {
    if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
        printf '%s\n' "$JAVA_HOME/bin/java"
    else
        command -v java || true
    fi
}

ensure_java() {
    local java major
    java="$(java_bin)"
    if [[ -z "$java" ]]; then
        apt_install openjdk-17-jre-headless
        java="$(java_bin)"
    fi
    major="$("$java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
    [[ "${major:-0}" -ge 17 ]] || die "Kafka $KAFKA_VERSION needs Java 17+, found: $("$java" -version 2>&1 | head -n1)"
    JAVA="$java"
}

write_fetch_pom() {
    cat >"$1" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by scripts/services.sh: resolves a runnable Kafka broker from Maven Central -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.kafka-celery-bridge</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$SCALA_VERSION</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <!-- Kafka logs through slf4j 1.7; route it into log4j2 (log4j-core is a Kafka runtime dependency) -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>$DEPENDENCY_PLUGIN_VERSION</version>
      </plugin>
    </plugins>
  </build>
</project>
EOF
}

ensure_kafka_libs() {
    [[ -f "$KAFKA_LIBS/.complete" ]] && return 0
    command -v mvn >/dev/null 2>&1 || apt_install maven
    mkdir -p "$KAFKA_DIST"
    (
        flock 9
        [[ -f "$KAFKA_LIBS/.complete" ]] && exit 0
        log "fetching Kafka $KAFKA_VERSION jars from Maven Central (first run only)"
        write_fetch_pom "$KAFKA_DIST/pom.xml"
        rm -rf "$KAFKA_LIBS.tmp"
        if ! mvn -B -q -Dstyle.color=never -f "$KAFKA_DIST/pom.xml" \
                dependency:copy-dependencies -DincludeScope=runtime \
                -DoutputDirectory="$KAFKA_LIBS.tmp" >"$KAFKA_DIST/mvn.log" 2>&1; then
            tail -n 30 "$KAFKA_DIST/mvn.log" >&2
            die "mvn could not fetch Kafka $KAFKA_VERSION (full log: $KAFKA_DIST/mvn.log)"
        fi
        [[ -f "$KAFKA_LIBS.tmp/kafka_$SCALA_VERSION-$KAFKA_VERSION.jar" ]] \
            || die "mvn finished but kafka_$SCALA_VERSION-$KAFKA_VERSION.jar is missing"
        rm -rf "$KAFKA_LIBS"
        mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
        ls "$KAFKA_LIBS" >"$KAFKA_LIBS/.complete"
    ) 9>"$KAFKA_DIST/.lock"
}

write_kafka_config() {
    mkdir -p "$KAFKA_HOME/data" "$KAFKA_HOME/logs"
    cat >"$KAFKA_HOME/server.properties" <<EOF
# generated by scripts/services.sh - rewritten on every start
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://$KAFKA_HOST:$KAFKA_SASL_PORT,SASL_SSL://$KAFKA_HOST:$KAFKA_SSL_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,SASL_PLAINTEXT://$KAFKA_HOST:$KAFKA_SASL_PORT,SASL_SSL://$KAFKA_HOST:$KAFKA_SSL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
log.dirs=$KAFKA_HOME/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
# one partition is plenty for a dev/test broker and makes the first consumer group join faster
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
    write_kafka_security_config >>"$KAFKA_HOME/server.properties"
    cat >"$KAFKA_HOME/log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by scripts/services.sh -->
<Configuration status="warn">
  <Appenders>
    <RollingFile name="server" fileName="$KAFKA_LOG" filePattern="$KAFKA_LOG.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="50MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="warn"/>
    <Logger name="org.apache.kafka.clients" level="warn"/>
    <Root level="info"><AppenderRef ref="server"/></Root>
  </Loggers>
</Configuration>
EOF
}

# The secured listeners: PLAIN (users from the JAAS line) and SCRAM (users stored in the
# cluster metadata, see ensure_scram_users) on SASL_PLAINTEXT and SASL_SSL.
write_kafka_security_config() {
    local listener mechanism plain_users
    plain_users="user_$KAFKA_SASL_USER=\"$KAFKA_SASL_PASSWORD\";"
    printf 'sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512\n'
    for listener in sasl_plaintext sasl_ssl; do
        printf 'listener.name.%s.plain.sasl.jaas.config=%s required %s\n' "$listener" \
            org.apache.kafka.common.security.plain.PlainLoginModule "$plain_users"
        for mechanism in scram-sha-256 scram-sha-512; do
            printf 'listener.name.%s.%s.sasl.jaas.config=%s required;\n' "$listener" \
                "$mechanism" org.apache.kafka.common.security.scram.ScramLoginModule
        done
    done
    cat <<EOF
ssl.keystore.type=PKCS12
ssl.keystore.location=$KAFKA_TLS/server.p12
ssl.keystore.password=$KAFKA_TLS_STORE_PASSWORD
ssl.key.password=$KAFKA_TLS_STORE_PASSWORD
EOF
}

# A CA and a server certificate for 127.0.0.1/localhost, made once per broker directory.
ensure_kafka_tls() {
    [[ -s "$KAFKA_TLS/server.p12" ]] && return 0
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    log "making a self-signed CA and server certificate in $KAFKA_TLS"
    mkdir -p "$KAFKA_TLS" "$KAFKA_HOME/logs"
    (
        cd "$KAFKA_TLS"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kcb-local-ca" \
            -keyout ca.key -out ca.pem
        openssl req -newkey rsa:2048 -nodes -subj "/CN=$KAFKA_HOST" \
            -keyout server.key -out server.csr
        printf 'subjectAltName=IP:%s,DNS:localhost\n' "$KAFKA_HOST" >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days 3650 -extfile server.ext -out server.pem
        openssl pkcs12 -export -inkey server.key -in server.pem -certfile ca.pem -name kafka \
            -passout "pass:$KAFKA_TLS_STORE_PASSWORD" -out server.p12.tmp
        mv server.p12.tmp server.p12
    ) >"$KAFKA_HOME/logs/tls.out" 2>&1 || { cat "$KAFKA_HOME/logs/tls.out" >&2; die "openssl failed"; }
}

# SCRAM users live in the cluster metadata: a fresh directory gets them at format time; an
# older one gets them through the admin API (kafka-python, from the repo's venv) once.
ensure_scram_users() {
    local marker="$KAFKA_HOME/data/scram-users" python="${SCRAM_PYTHON:-$REPO_ROOT/.venv/bin/python}"
    [[ "$(cat "$marker" 2>/dev/null)" == "$KAFKA_SASL_USER" ]] && return 0
    if ! "$python" -c 'import kafka' 2>/dev/null; then
        log "warning: no kafka-python in $python: SCRAM user $KAFKA_SASL_USER not created (run 'make install', then 'up' again)"
        return 0
    fi
    KAFKA_SASL_PASSWORD="$KAFKA_SASL_PASSWORD" "$python" - "$KAFKA_HOST:$KAFKA_PORT" \
        "$KAFKA_SASL_USER" <<'PY' || die "could not create the SCRAM user $KAFKA_SASL_USER"
import os, sys
from kafka.admin import KafkaAdminClient, ScramMechanism, UserScramCredentialUpsertion
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=10000)
user, password = sys.argv[2], os.environ["KAFKA_SASL_PASSWORD"]
failed = False
for mechanism in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512):
    # one request per mechanism: the broker refuses two alterations of a user in one
    error = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(user, mechanism, password)])[user]
    if error:
        print(f"{mechanism.name}: {error}", file=sys.stderr)
        failed = True
admin.close()
sys.exit(1 if failed else 0)
PY
    printf '%s\n' "$KAFKA_SASL_USER" >"$marker"
    log "SCRAM-SHA-256/512 user $KAFKA_SASL_USER created"
}

# The java command line shared by the storage tool and the broker.
set_kafka_jvm() {
    # shellcheck disable=SC2206  # heap/extra opts are intentionally word-split
    KAFKA_JVM=("$JAVA" $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        -Dkafka.logs.dir="$KAFKA_HOME/logs" -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2.xml"
        $KAFKA_EXTRA_JVM_OPTS -cp "$KAFKA_LIBS/*")
}

random_cluster_id() {
    # Kafka cluster ids are 16 random bytes, URL-safe base64 without padding (22 chars).
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)"
        [[ "$id" != -* ]] && { printf '%s\n' "$id"; return; }
    done
}

format_kafka_storage() {
    [[ -f "$KAFKA_HOME/data/meta.properties" ]] && return 0
    local cluster_id
    if [[ -s "$KAFKA_HOME/cluster.id" ]]; then
        cluster_id="$(cat "$KAFKA_HOME/cluster.id")"
    else
        cluster_id="$(random_cluster_id)"
        printf '%s\n' "$cluster_id" >"$KAFKA_HOME/cluster.id"
    fi
    log "formatting KRaft storage in $KAFKA_HOME/data (cluster id $cluster_id)"
    if ! "${KAFKA_JVM[@]}" kafka.tools.StorageTool format --cluster-id "$cluster_id" \
            --config "$KAFKA_HOME/server.properties" --ignore-formatted \
            --add-scram "SCRAM-SHA-256=[name=$KAFKA_SASL_USER,password=$KAFKA_SASL_PASSWORD]" \
            --add-scram "SCRAM-SHA-512=[name=$KAFKA_SASL_USER,password=$KAFKA_SASL_PASSWORD]" \
            </dev/null >"$KAFKA_HOME/logs/storage-format.out" 2>&1; then
        cat "$KAFKA_HOME/logs/storage-format.out" >&2
        die "kafka storage format failed"
    fi
    printf '%s\n' "$KAFKA_SASL_USER" >"$KAFKA_HOME/data/scram-users"
}

# Ask the broker over the wire: ApiVersions, then a Metadata request that must
# list our node. Exits 0 only when the broker really serves clients.
kafka_probe() {
    "$PROBE_PYTHON" - "$KAFKA_HOST" "$KAFKA_PORT" 1 <<'PY'
import socket, struct, sys
host, port, node_id = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
CLIENT = b"services.sh"

def recvn(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf

def call(s, key, ver, corr, body=b""):
    msg = struct.pack(">hhih", key, ver, corr, len(CLIENT)) + CLIENT + body
    s.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", recvn(s, 4))
    data = recvn(s, size)
    if struct.unpack(">i", data[:4])[0] != corr:
        raise ValueError("correlation id mismatch")
    return data[4:]

try:
    with socket.create_connection((host, port), timeout=3) as s:
        s.settimeout(3)
        r = call(s, 18, 0, 1)                         # ApiVersions v0
        err, n = struct.unpack(">hi", r[:6])
        if err:
            sys.exit(1)
        versions = {k: (lo, hi) for k, lo, hi in
                    (struct.unpack(">hhh", r[6 + 6 * i: 12 + 6 * i]) for i in range(n))}
        lo, hi = versions.get(3, (0, -1))             # Metadata
        if not (lo <= 4 <= hi):
            sys.exit(0)                               # newer than we can parse; ApiVersions answered
        r = call(s, 3, 4, 2, struct.pack(">i?", 0, False))  # Metadata v4, no topics
        pos = 4                                       # throttle_time_ms
        (nb,) = struct.unpack(">i", r[pos:pos + 4]); pos += 4
        nodes = []
        for _ in range(nb):
            (nid,) = struct.unpack(">i", r[pos:pos + 4]); pos += 4
            (hl,) = struct.unpack(">h", r[pos:pos + 2]); pos += 2 + hl + 4
            (rl,) = struct.unpack(">h", r[pos:pos + 2]); pos += 2 + max(rl, 0)
            nodes.append(nid)
        sys.exit(0 if node_id in nodes else 1)
except (OSError, EOFError, ValueError, struct.error):
    sys.exit(1)
PY
}

# The system python3 first (a pyenv/venv shim may depend on the caller's directory).
find_probe_python() {
    local c
    for c in /usr/bin/python3 python3; do
        if command -v "$c" >/dev/null 2>&1 && "$c" -c '' 2>/dev/null; then
            PROBE_PYTHON="$c"
            return 0
        fi
    done
    die "python3 is needed for the Kafka readiness probe"
}

kafka_pid() { owned_pid "$KAFKA_PID_FILE" "$KAFKA_HOME/server.properties"; }

kafka_fail() {
    log "--- tail of $KAFKA_LOG ---"
    tail -n 40 "$KAFKA_LOG" >&2 2>/dev/null || true
    if [[ -s "$KAFKA_OUT" ]]; then
        log "--- tail of $KAFKA_OUT ---"
        tail -n 20 "$KAFKA_OUT" >&2
    fi
    die "$*"
}

kafka_up() {
    local pid deadline
    find_probe_python
    pid="$(kafka_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$KAFKA_PID_FILE"
        if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
            die "port $KAFKA_PORT is already in use by a process this script did not start"
        fi
        if port_open "$KAFKA_HOST" "$KAFKA_CONTROLLER_PORT"; then
            die "controller port $KAFKA_CONTROLLER_PORT is already in use (set KAFKA_CONTROLLER_PORT)"
        fi
        ensure_java
        ensure_kafka_libs
        ensure_kafka_tls
        write_kafka_config
        set_kafka_jvm
        format_kafka_storage
        # A plain background command, so $! is the JVM itself (setsid and nohup
        # exec it). setsid puts the broker in a session of its own, so it outlives
        # the shell (and process group) that started it, as the daemonized Redis does.
        # Every fd points at a file: callers reading our output through a pipe
        # are not held open by the broker.
        setsid nohup "${KAFKA_JVM[@]}" kafka.Kafka "$KAFKA_HOME/server.properties" \
            </dev/null >"$KAFKA_OUT" 2>&1 &
        pid=$!
        printf '%s\n' "$pid" >"$KAFKA_PID_FILE"
        log "kafka $KAFKA_VERSION starting (pid $pid), waiting up to ${KAFKA_START_TIMEOUT}s"
    elif kafka_probe; then
        log "kafka $KAFKA_VERSION already up on $KAFKA_HOST:$KAFKA_PORT (pid $pid)"
        port_open "$KAFKA_HOST" "$KAFKA_SASL_PORT" \
            || log "warning: no SASL listener on $KAFKA_SASL_PORT: restart kafka (stop-kafka, start-kafka) to add it"
        ensure_scram_users
        return 0
    else
        log "kafka (pid $pid) is running but not answering yet, waiting"
    fi
    deadline=$(( $(now) + KAFKA_START_TIMEOUT ))
    until kafka_probe; do
        if ! pid_alive "$pid"; then
            rm -f "$KAFKA_PID_FILE"
            kafka_fail "kafka exited during startup"
        fi
        if (( $(now) >= deadline )); then
            stop_pid "$pid" kafka 10
            rm -f "$KAFKA_PID_FILE"
            kafka_fail "kafka did not answer on $KAFKA_HOST:$KAFKA_PORT within ${KAFKA_START_TIMEOUT}s"
        fi
        sleep 0.5
    done
    ensure_scram_users
    log "kafka $KAFKA_VERSION up on $KAFKA_HOST:$KAFKA_PORT (pid $pid), SASL on $KAFKA_SASL_PORT, SASL_SSL on $KAFKA_SSL_PORT"
}

kafka_down() {
    local pid
    pid="$(kafka_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$KAFKA_PID_FILE"
        log "kafka on port $KAFKA_PORT already down"
        return 0
    fi
    log "stopping kafka (pid $pid)"
    stop_pid "$pid" kafka "$KAFKA_STOP_TIMEOUT"
    rm -f "$KAFKA_PID_FILE"
    log "kafka on port $KAFKA_PORT down"
}

kafka_status() {
    local pid
    find_probe_python
    pid="$(kafka_pid)"
    if [[ -n "$pid" ]] && kafka_probe; then
        printf 'kafka  up    %s:%s  pid %s  (Kafka %s, controller port %s, SASL %s, SASL_SSL %s)\n' \
            "$KAFKA_HOST" "$KAFKA_PORT" "$pid" "$KAFKA_VERSION" "$KAFKA_CONTROLLER_PORT" \
            "$KAFKA_SASL_PORT" "$KAFKA_SSL_PORT"
        return 0
    elif [[ -n "$pid" ]]; then
        printf 'kafka  down  %s:%s  pid %s  (process running but not answering)\n' "$KAFKA_HOST" "$KAFKA_PORT" "$pid"
    else
        printf 'kafka  down  %s:%s  pid -\n' "$KAFKA_HOST" "$KAFKA_PORT"
    fi
    return 1
}

# ---------------------------------------------------------------- redis

ensure_redis() {
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
    apt_install redis-server
    # The package may have started its own service on 6379 (it does where
    # policy-rc.d allows it); we run our own instance, so stop and disable it.
    if redis-cli -p 6379 ping 2>/dev/null | grep -q PONG; then
        log "stopping the redis-server service the package started on port 6379"
        if [[ -d /run/systemd/system ]]; then
            as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
        else
            as_root service redis-server stop >/dev/null 2>&1 || true
            as_root update-rc.d redis-server disable >/dev/null 2>&1 || true
        fi
    fi
}

redis_pid() { owned_pid "$REDIS_PID_FILE" "redis-server"; }

redis_ping() { [[ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

redis_up() {
    local pid deadline
    ensure_redis
    pid="$(redis_pid)"
    if [[ -n "$pid" ]] && redis_ping; then
        log "redis already up on $REDIS_HOST:$REDIS_PORT (pid $pid)"
        return 0
    fi
    if [[ -z "$pid" ]]; then
        rm -f "$REDIS_PID_FILE"
        if port_open "$REDIS_HOST" "$REDIS_PORT"; then
            die "port $REDIS_PORT is already in use by a process this script did not start"
        fi
        mkdir -p "$REDIS_HOME/data"
        redis-server --port "$REDIS_PORT" --bind "$REDIS_HOST" \
            --appendonly yes --maxmemory-policy noeviction \
            --dir "$REDIS_HOME/data" --daemonize yes \
            --pidfile "$REDIS_PID_FILE" --logfile "$REDIS_LOG" </dev/null >/dev/null \
            || die "redis-server failed to start (see $REDIS_LOG)"
    fi
    deadline=$(( $(now) + REDIS_START_TIMEOUT ))
    until redis_ping; do
        if (( $(now) >= deadline )); then
            tail -n 20 "$REDIS_LOG" >&2 2>/dev/null || true
            die "redis did not answer PONG on port $REDIS_PORT within ${REDIS_START_TIMEOUT}s"
        fi
        sleep 0.1
    done
    pid="$(redis_pid)"
    log "redis up on $REDIS_HOST:$REDIS_PORT (pid ${pid:-?}, aof, noeviction)"
}

redis_down() {
    local pid
    pid="$(redis_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$REDIS_PID_FILE"
        log "redis on port $REDIS_PORT already down"
        return 0
    fi
    log "stopping redis (pid $pid)"
    stop_pid "$pid" redis "$REDIS_STOP_TIMEOUT"   # SIGTERM = SHUTDOWN (fsyncs the AOF)
    rm -f "$REDIS_PID_FILE"
    log "redis on port $REDIS_PORT down"
}

redis_status() {
    local pid
    pid="$(redis_pid)"
    if [[ -n "$pid" ]] && command -v redis-cli >/dev/null 2>&1 && redis_ping; then
        printf 'redis  up    %s:%s  pid %s\n' "$REDIS_HOST" "$REDIS_PORT" "$pid"
        return 0
    fi
    printf 'redis  down  %s:%s  pid %s\n' "$REDIS_HOST" "$REDIS_PORT" "${pid:--}"
    return 1
}

# ---------------------------------------------------------------- main

usage() {
    sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

main() {
    local cmd="${1:-}" rc=0
    case "$cmd" in
        up|down|status|stop-redis|start-redis|restart-redis|stop-kafka|start-kafka) ;;
        redis-primary|redis-url) ;;
        *) usage ;;
    esac
    case "$REDIS_TOPOLOGY" in
        single|sentinel) ;;
        *) die "REDIS_TOPOLOGY must be single or sentinel (got '$REDIS_TOPOLOGY')" ;;
    esac
    if [[ "$REDIS_TOPOLOGY" == single && "$cmd" == redis-* ]]; then
        case "$cmd" in
            redis-primary) printf '%s:%s\n' "$REDIS_HOST" "$REDIS_PORT" ;;
            redis-url)     printf 'redis://%s:%s/0\n' "$REDIS_HOST" "$REDIS_PORT" ;;
        esac
        return
    fi
    resolve_mode
    if [[ "$SERVICES_MODE" == docker ]]; then
        [[ "$REDIS_TOPOLOGY" == single ]] || die "REDIS_TOPOLOGY=sentinel runs local processes only (SERVICES_MODE=local)"
        docker_cmd "$cmd"
        return
    fi
    mkdir -p "$SERVICES_DIR"
    if [[ "$REDIS_TOPOLOGY" == sentinel ]]; then
        # shellcheck source=scripts/services_sentinel.sh
        source "$SCRIPT_DIR/services_sentinel.sh"
        sentinel_cmd "$cmd"
        return
    fi
    case "$cmd" in
        up)            redis_up; kafka_up ;;
        down)          kafka_down; redis_down ;;
        status)        kafka_status || rc=3; redis_status || rc=3; return "$rc" ;;
        stop-redis)    redis_down ;;
        start-redis)   redis_up ;;
        restart-redis) redis_down; redis_up ;;
        stop-kafka)    kafka_down ;;
        start-kafka)   kafka_up ;;
    esac
}

main "$@"
