#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker+controller) run from
# the Maven Central jars with the machine's Java. No Docker, no tarball.
#
#   kafka.sh fetch                      download the jars (cached, idempotent)
#   kafka.sh start [options]            format (first time) and start a broker
#   kafka.sh stop  [--data-dir D] [--timeout S] [--kill]
#   kafka.sh status [--data-dir D]
#
# start options:
#   --port N             client (PLAINTEXT) port on 127.0.0.1; 0 = pick a free one (default 9092)
#   --controller-port N  KRaft controller port; 0 = pick a free one (default 9093)
#   --data-dir D         storage, config, logs and pid file (default $STREAMSINK_INFRA_DIR/kafka-data)
#   --config k=v         extra server.properties entry (repeatable)
#   --fresh              wipe the data dir first
#   --timeout S          seconds to wait for the broker (default 90)
# An already formatted data dir is reused as is (same cluster, same topics);
# then ports not given on the command line are the ones it ran with before.
# start prints the bootstrap address (127.0.0.1:PORT) on stdout; everything
# else goes to stderr. The broker's log is DATA/logs/server.log.
#
# Environment: STREAMSINK_INFRA_DIR (cache root, default ~/.cache/streamsink),
# KAFKA_LIBS (jar dir), KAFKA_HEAP_OPTS (default -Xmx512m -Xms128m),
# KAFKA_JVM_OPTS (extra JVM flags), JAVA (java binary), MVN (mvn binary).
set -euo pipefail

KAFKA_VERSION=3.9.2
SCALA_BINARY=2.13
SLF4J_VERSION=1.7.36
RELOAD4J_VERSION=1.2.25
DEPENDENCY_PLUGIN_VERSION=3.8.1

INFRA_DIR="${STREAMSINK_INFRA_DIR:-$HOME/.cache/streamsink}"
KAFKA_HOME="$INFRA_DIR/kafka-3.9"
LIBS="${KAFKA_LIBS:-$KAFKA_HOME/libs}"
JAVA="${JAVA:-java}"
MVN="${MVN:-mvn}"
HOST=127.0.0.1

log() { echo "kafka.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# Seconds since the epoch with milliseconds, for the timings printed on stderr.
now_ms() { local t; t=$(date +%s%3N); echo "$t"; }

libs_ready() { [[ -f "$LIBS/.complete" ]] && [[ "$(cat "$LIBS/.complete")" == "$KAFKA_VERSION" ]]; }

cmd_fetch() {
  command -v "$JAVA" >/dev/null 2>&1 || die "Java ('$JAVA') is not on PATH; Kafka needs Java 17 (apt-get install -y openjdk-17-jre-headless)"
  if libs_ready && [[ -f "$(cds_file)" ]]; then
    log "Kafka $KAFKA_VERSION jars already in $LIBS"
    return 0
  fi
  libs_ready || command -v "$MVN" >/dev/null 2>&1 || die "Maven ('$MVN') is not on PATH; it is needed to fetch Kafka $KAFKA_VERSION from Maven Central (apt-get install -y maven)"
  mkdir -p "$(dirname "$LIBS")"
  # One fetch at a time across processes; the others wait and then see .complete.
  exec 8>"$(dirname "$LIBS")/.fetch.lock"
  flock 8
  if libs_ready; then
    log "Kafka $KAFKA_VERSION jars already in $LIBS"
  else
    fetch_libs
  fi
  [[ -f "$(cds_file)" ]] || build_cds
  exec 8>&-
}

fetch_libs() {
  local t0 work
  t0=$(now_ms)
  work=$(mktemp -d "$(dirname "$LIBS")/fetch.XXXXXX")
  cat >"$work/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.streamsink</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_${SCALA_BINARY}</artifactId>
      <version>${KAFKA_VERSION}</version>
    </dependency>
    <!-- The broker's logging binding (what the Kafka distribution ships). -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>${SLF4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>ch.qos.reload4j</groupId>
      <artifactId>reload4j</artifactId>
      <version>${RELOAD4J_VERSION}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>${DEPENDENCY_PLUGIN_VERSION}</version>
      </plugin>
    </plugins>
  </build>
</project>
EOF
  log "fetching Kafka $KAFKA_VERSION (kafka_$SCALA_BINARY) and its dependencies from Maven Central"
  if ! "$MVN" -B -q -f "$work/pom.xml" \
      org.apache.maven.plugins:maven-dependency-plugin:${DEPENDENCY_PLUGIN_VERSION}:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1; then
    tail -n 40 "$work/mvn.log" >&2
    rm -rf "$work"
    die "mvn dependency:copy-dependencies failed (see above)"
  fi
  [[ -f "$work/libs/kafka_${SCALA_BINARY}-${KAFKA_VERSION}.jar" ]] || { rm -rf "$work"; die "Maven finished but kafka_${SCALA_BINARY}-${KAFKA_VERSION}.jar is missing"; }
  echo "$KAFKA_VERSION" >"$work/libs/.complete"
  rm -rf "$LIBS"
  mv "$work/libs" "$LIBS"
  rm -rf "$work"
  log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars into $LIBS in $(( $(now_ms) - t0 ))ms"
}

# Start a throwaway broker that writes the class data sharing archive when it exits.
build_cds() {
  local out tmp t0
  out=$(cds_file)
  t0=$(now_ms)
  mkdir -p "$(dirname "$out")"
  tmp=$(mktemp -d "$(dirname "$out")/build.XXXXXX")
  if (CDS_DUMP="$tmp/kafka.jsa" cmd_start --port 0 --controller-port 0 --data-dir "$tmp/data" >/dev/null &&
      cmd_stop --data-dir "$tmp/data") 2>"$tmp/build.log" && [[ -s "$tmp/kafka.jsa" ]]; then
    mv "$tmp/kafka.jsa" "$out"
    log "built the class data sharing archive $out in $(( $(now_ms) - t0 ))ms"
  else
    log "warning: could not build the class data sharing archive (the broker still works, it just starts slower):"
    tail -n 20 "$tmp/build.log" >&2 || true
  fi
  rm -rf "$tmp"
}

# Classpath: every jar of LIBS, sorted (stable, so the JVM's class data sharing can be reused).
classpath() {
  local jars=("$LIBS"/*.jar)
  local IFS=:
  echo "${jars[*]}"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# A port nobody listens on, below the Linux ephemeral range (so outgoing connections don't hold it).
free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 12000))
    [[ " ${*:-} " == *" $p "* ]] && continue
    port_open "$p" || { echo "$p"; return 0; }
  done
  die "could not find a free port"
}

default_data_dir() { echo "$INFRA_DIR/kafka-data"; }

# Alive = exists and is not a zombie whose threads have all exited (an orphaned broker is reaped
# by init only after a while, and a killed JVM's leader thread turns zombie before the others are gone).
pid_alive() {
  local stat tasks
  [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]] && return 0
  tasks=(/proc/"$1"/task/*)
  ((${#tasks[@]} > 1))
}

# The pid in DATA/kafka.pid, only if it is still our broker (not a recycled pid).
running_pid() {
  local data="$1" pid
  [[ -f "$data/kafka.pid" ]] || return 1
  pid=$(cat "$data/kafka.pid")
  pid_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "kafka.Kafka $data/server.properties" || return 1
  echo "$pid"
}

# Class data sharing archive of the broker's classes (built by `fetch`, for this java binary):
# it halves the JVM start-up. A missing or mismatched archive is ignored (-Xshare:auto).
cds_file() {
  local j
  j=$(readlink -f "$(command -v "$JAVA")")
  echo "$KAFKA_HOME/cds/kafka-$KAFKA_VERSION-$(echo "$j $(stat -c %Y "$j")" | cksum | cut -d' ' -f1).jsa"
}

# JVM flags; $1 = "dump" makes this JVM write the class data sharing archive at exit to $CDS_DUMP.
jvm_opts() {
  local cds="" f
  if [[ "${1:-}" == dump ]]; then
    cds="-XX:ArchiveClassesAtExit=$CDS_DUMP"
  elif [[ -z "${CDS_DUMP:-}" ]] && f=$(cds_file) && [[ -f "$f" ]]; then
    cds="-XX:SharedArchiveFile=$f"
  fi
  # Small heap; serial GC and C1-only compilation keep start-up cheap on a small machine.
  echo "${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m} -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto $cds -Djava.awt.headless=true ${KAFKA_JVM_OPTS:-}"
}

write_config() {
  local data="$1" port="$2" cport="$3"
  shift 3
  {
    echo "# generated by deploy/local/kafka.sh"
    echo "process.roles=broker,controller"
    echo "node.id=1"
    echo "controller.quorum.voters=1@$HOST:$cport"
    echo "listeners=PLAINTEXT://$HOST:$port,CONTROLLER://$HOST:$cport"
    echo "advertised.listeners=PLAINTEXT://$HOST:$port"
    echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    echo "controller.listener.names=CONTROLLER"
    echo "inter.broker.listener.name=PLAINTEXT"
    echo "log.dirs=$data/kraft"
    echo "num.partitions=1"
    echo "offsets.topic.replication.factor=1"
    echo "transaction.state.log.replication.factor=1"
    echo "transaction.state.log.min.isr=1"
    echo "group.initial.rebalance.delay.ms=0"
    # Quick re-registration when the broker restarts after a hard kill (default 9000/2000).
    echo "broker.session.timeout.ms=3000"
    echo "broker.heartbeat.interval.ms=500"
    echo "auto.create.topics.enable=false"
    echo "num.network.threads=2"
    echo "num.io.threads=2"
    echo "num.recovery.threads.per.data.dir=1"
    echo "background.threads=2"
    local kv
    for kv in "$@"; do echo "$kv"; done
  } >"$data/server.properties"
  cat >"$data/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$data/logs/server.log
log4j.appender.file.Append=true
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN
EOF
  {
    echo "KAFKA_PORT=$port"
    echo "KAFKA_CONTROLLER_PORT=$cport"
    echo "KAFKA_BOOTSTRAP=$HOST:$port"
  } >"$data/kafka.env"
}

format_storage() {
  local data="$1" id
  # A random cluster id: a base64url UUID, 22 characters (not starting with '-', which argparse would take for an option).
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    [[ "$id" != -* ]] && break
  done
  # shellcheck disable=SC2046
  if ! "$JAVA" $(jvm_opts) -Dlog4j.configuration="file:$data/log4j.properties" -cp "$(classpath)" \
      kafka.tools.StorageTool format -t "$id" -c "$data/server.properties" >"$data/logs/format.log" 2>&1 8>&-; then
    cat "$data/logs/format.log" >&2
    die "kafka.tools.StorageTool format failed"
  fi
}

# Launch the broker; returns 0 when it serves, 2 when it died of a port clash, dies otherwise.
launch() {
  local data="$1" port="$2" timeout="$3"
  local logfile="$data/logs/server.log" offset=0 pid deadline
  [[ -f "$logfile" ]] && offset=$(stat -c %s "$logfile")
  echo "---- start $(date -Is) ----" >>"$data/logs/kafka.out"
  # shellcheck disable=SC2046
  setsid "$JAVA" $(jvm_opts "${CDS_DUMP:+dump}") \
    -Dlog4j.configuration="file:$data/log4j.properties" -Dkafka.logs.dir="$data/logs" \
    -cp "$(classpath)" kafka.Kafka "$data/server.properties" \
    </dev/null >>"$data/logs/kafka.out" 2>&1 8>&- &
  pid=$!
  echo "$pid" >"$data/kafka.pid"
  deadline=$(($(date +%s) + timeout))
  # Ready = the server logged "Kafka Server started" (after it is unfenced) and the client port accepts.
  while :; do
    if ! pid_alive "$pid"; then
      rm -f "$data/kafka.pid"
      if tail -c +"$((offset + 1))" "$logfile" 2>/dev/null | grep -q -e 'Address already in use' -e 'BindException'; then
        return 2
      fi
      log "broker exited during start-up; last lines of $logfile and kafka.out:"
      tail -c +"$((offset + 1))" "$logfile" 2>/dev/null | tail -n 30 >&2 || true
      tail -n 20 "$data/logs/kafka.out" >&2 || true
      exit 1
    fi
    if tail -c +"$((offset + 1))" "$logfile" 2>/dev/null | grep -q 'Kafka Server started' && port_open "$port"; then
      return 0
    fi
    if (($(date +%s) >= deadline)); then
      log "broker not ready after ${timeout}s; stopping it. Last lines of $logfile:"
      tail -n 30 "$logfile" >&2 || true
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$data/kafka.pid"
      exit 1
    fi
    sleep 0.05
  done
}

cmd_start() {
  local port="" cport="" data="" fresh=0 timeout=90
  local extra=()
  while (($#)); do
    case "$1" in
      --port) port="$2"; shift 2 ;;
      --controller-port) cport="$2"; shift 2 ;;
      --data-dir) data="$2"; shift 2 ;;
      --config) extra+=("$2"); shift 2 ;;
      --fresh) fresh=1; shift ;;
      --timeout) timeout="$2"; shift 2 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  command -v "$JAVA" >/dev/null 2>&1 || die "Java ('$JAVA') is not on PATH; Kafka needs Java 17 (apt-get install -y openjdk-17-jre-headless)"
  libs_ready || cmd_fetch
  data="${data:-$(default_data_dir)}"
  mkdir -p "$data"
  data="$(cd "$data" && pwd -P)"
  local t0 pid
  t0=$(now_ms)
  if pid=$(running_pid "$data"); then
    die "a broker (pid $pid) already runs from $data; stop it first"
  fi
  ((fresh)) && rm -rf "${data:?}/kraft" "$data/logs" "$data/server.properties" "$data/kafka.env" "$data/log4j.properties"
  mkdir -p "$data/logs"
  local formatted=0
  [[ -f "$data/kraft/meta.properties" ]] && formatted=1
  if ((formatted)) && [[ -f "$data/kafka.env" ]]; then
    # Restart of an existing broker: same ports unless told otherwise.
    local KAFKA_PORT="" KAFKA_CONTROLLER_PORT=""
    # shellcheck disable=SC1091
    source "$data/kafka.env"
    port="${port:-$KAFKA_PORT}"
    cport="${cport:-$KAFKA_CONTROLLER_PORT}"
  fi
  port="${port:-9092}"
  cport="${cport:-9093}"
  local pick_port=0 pick_cport=0 attempt
  [[ "$port" == 0 ]] && pick_port=1
  [[ "$cport" == 0 ]] && pick_cport=1
  for attempt in 1 2 3 4 5; do
    ((pick_port)) && port=$(free_port)
    ((pick_cport)) && cport=$(free_port "$port")
    [[ "$port" != "$cport" ]] || die "--port and --controller-port must differ"
    port_open "$port" && { ((pick_port)) && continue; die "port $port on $HOST is already in use"; }
    port_open "$cport" && { ((pick_cport)) && continue; die "controller port $cport on $HOST is already in use"; }
    write_config "$data" "$port" "$cport" "${extra[@]+"${extra[@]}"}"
    if ((!formatted)); then
      format_storage "$data"
      formatted=1
    fi
    local rc=0
    launch "$data" "$port" "$timeout" || rc=$?
    if ((rc == 0)); then
      log "broker pid $(cat "$data/kafka.pid") ready on $HOST:$port (controller $cport, data $data) in $(( $(now_ms) - t0 ))ms"
      echo "$HOST:$port"
      return 0
    fi
    if ((pick_port || pick_cport)) && ((attempt < 5)); then
      log "port clash on $port/$cport; trying other ports"
      continue
    fi
    die "broker could not bind $HOST:$port / $HOST:$cport (address already in use)"
  done
  die "no free ports found"
}

cmd_stop() {
  local data="" timeout=30 sig=TERM
  while (($#)); do
    case "$1" in
      --data-dir) data="$2"; shift 2 ;;
      --timeout) timeout="$2"; shift 2 ;;
      --kill) sig=KILL; shift ;;
      *) die "stop: unknown option $1" ;;
    esac
  done
  data="${data:-$(default_data_dir)}"
  [[ -d "$data" ]] || { log "no data dir $data; nothing to stop"; return 0; }
  data="$(cd "$data" && pwd -P)"
  local pid
  if ! pid=$(running_pid "$data"); then
    rm -f "$data/kafka.pid"
    log "no broker running from $data"
    return 0
  fi
  local t0 deadline
  t0=$(now_ms)
  kill -"$sig" "$pid" 2>/dev/null || true
  deadline=$(($(date +%s) + timeout))
  while pid_alive "$pid"; do
    if (($(date +%s) >= deadline)); then
      log "broker pid $pid still alive after ${timeout}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$(($(date +%s) + 10))
      while pid_alive "$pid"; do
        (($(date +%s) < deadline)) || die "pid $pid survived SIGKILL"
        sleep 0.05
      done
      break
    fi
    sleep 0.05
  done
  rm -f "$data/kafka.pid"
  log "broker pid $pid stopped (SIG$sig) in $(( $(now_ms) - t0 ))ms"
}

cmd_status() {
  local data=""
  while (($#)); do
    case "$1" in
      --data-dir) data="$2"; shift 2 ;;
      *) die "status: unknown option $1" ;;
    esac
  done
  data="${data:-$(default_data_dir)}"
  local pid
  if [[ -d "$data" ]] && pid=$(running_pid "$(cd "$data" && pwd -P)"); then
    local KAFKA_BOOTSTRAP=""
    # shellcheck disable=SC1091
    source "$data/kafka.env"
    log "running: pid $pid"
    echo "$KAFKA_BOOTSTRAP"
  else
    log "not running"
    return 1
  fi
}

case "${1:-}" in
  fetch) shift; cmd_fetch "$@" ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) echo "usage: $0 fetch | start [--port N] [--controller-port N] [--data-dir D] [--config k=v] [--fresh] [--timeout S] | stop [--data-dir D] [--timeout S] [--kill] | status [--data-dir D]" >&2; exit 2 ;;
esac
