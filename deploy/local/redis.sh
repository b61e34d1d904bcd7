#!/usr/bin/env bash
# Local Redis on loopback, from Debian's redis-server. No Docker.
#
#   redis.sh install                    apt-get install redis-server (as root, when missing)
#   redis.sh start [options]            start a daemonized redis-server
#   redis.sh stop  [--data-dir D] [--nosave] [--kill] [--timeout S]
#   redis.sh status [--data-dir D]
#
# start options:
#   --port N        port on 127.0.0.1; 0 = pick a free one (default 6379, or the
#                   port the data dir ran with before)
#   --data-dir D    pid file, log and dump.rdb (default $STREAMSINK_INFRA_DIR/redis-data)
#   --fresh         wipe the data dir first
#   --appendonly    persist every write (AOF, fsync always), so even a SIGKILL
#                   loses nothing acknowledged; remembered in the data dir
#   --timeout S     seconds to wait for PING (default 30)
# No periodic persistence (--save "", and no AOF unless --appendonly). `stop` does SHUTDOWN SAVE
# so a stop/start keeps the data; `stop --nosave` or `stop --kill` loses it,
# like a crash. start prints redis://127.0.0.1:PORT on stdout.
set -euo pipefail

INFRA_DIR="${STREAMSINK_INFRA_DIR:-$HOME/.cache/streamsink}"
HOST=127.0.0.1
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
REDIS_CLI="${REDIS_CLI:-redis-cli}"

log() { echo "redis.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { date +%s%3N; }

cmd_install() {
  if command -v "$REDIS_SERVER" >/dev/null 2>&1 && command -v "$REDIS_CLI" >/dev/null 2>&1; then
    log "$("$REDIS_SERVER" --version) already installed"
    return 0
  fi
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    die "redis-server/redis-cli are not installed and this is not root with apt-get; run as root: apt-get update && apt-get install -y redis-server"
  fi
  log "installing redis-server from Debian"
  # The package's post-install tries to start a service; there is no init system to start it here.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server redis-tools >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server redis-tools >&2; }
  command -v "$REDIS_SERVER" >/dev/null 2>&1 || die "apt-get finished but redis-server is still not on PATH"
  log "installed $("$REDIS_SERVER" --version)"
}

need_redis() {
  local missing=()
  command -v "$REDIS_SERVER" >/dev/null 2>&1 || missing+=(redis-server)
  command -v "$REDIS_CLI" >/dev/null 2>&1 || missing+=(redis-cli)
  ((${#missing[@]} == 0)) || die "${missing[*]} not on PATH; run 'bash deploy/local/redis.sh install' as root (apt-get install -y redis-server)"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 12000))
    port_open "$p" || { echo "$p"; return 0; }
  done
  die "could not find a free port"
}

default_data_dir() { echo "$INFRA_DIR/redis-data"; }

# Alive = exists and is not a zombie whose threads have all exited (a daemon is reaped by init
# only after a while, and a killed server's main thread turns zombie before its other threads).
pid_alive() {
  local stat tasks
  [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]] && return 0
  tasks=(/proc/"$1"/task/*)
  ((${#tasks[@]} > 1))
}

running_pid() {
  local data="$1" pid
  [[ -f "$data/redis.pid" ]] || return 1
  pid=$(cat "$data/redis.pid")
  pid_alive "$pid" || return 1
  [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$data" ]] || return 1
  echo "$pid"
}

cli() { "$REDIS_CLI" -h "$HOST" -p "$1" "${@:2}"; }

cmd_start() {
  local port="" data="" fresh=0 timeout=30 aof=""
  while (($#)); do
    case "$1" in
      --port) port="$2"; shift 2 ;;
      --data-dir) data="$2"; shift 2 ;;
      --fresh) fresh=1; shift ;;
      --appendonly) aof=1; shift ;;
      --timeout) timeout="$2"; shift 2 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  need_redis
  data="${data:-$(default_data_dir)}"
  mkdir -p "$data"
  data="$(cd "$data" && pwd -P)"
  local t0 pid
  t0=$(now_ms)
  if pid=$(running_pid "$data"); then
    die "a redis-server (pid $pid) already runs from $data; stop it first"
  fi
  ((fresh)) && rm -rf "$data/dump.rdb" "$data/redis.env" "$data/redis.log" "$data/appendonlydir"
  if [[ -f "$data/redis.env" ]]; then
    local REDIS_PORT="" REDIS_APPENDONLY=""
    # shellcheck disable=SC1091
    source "$data/redis.env"
    [[ -z "$port" ]] && port="$REDIS_PORT"
    [[ -z "$aof" ]] && aof="$REDIS_APPENDONLY"
  fi
  local persistence=(--appendonly no)
  [[ -n "$aof" ]] && persistence=(--appendonly yes --appendfsync always)
  port="${port:-6379}"
  local pick=0 _
  [[ "$port" == 0 ]] && pick=1
  for _ in 1 2 3 4 5; do
    ((pick)) && port=$(free_port)
    if port_open "$port"; then
      ((pick)) && continue
      die "port $port on $HOST is already in use"
    fi
    printf 'REDIS_PORT=%s\nREDIS_APPENDONLY=%s\n' "$port" "$aof" >"$data/redis.env"
    rm -f "$data/redis.pid"
    local offset=0
    [[ -f "$data/redis.log" ]] && offset=$(stat -c %s "$data/redis.log")
    # Run from the data dir (so the pid check can tell our server by its cwd).
    if ! (cd "$data" && "$REDIS_SERVER" --bind "$HOST" --port "$port" --save "" "${persistence[@]}" \
        --dir "$data" --dbfilename dump.rdb --daemonize yes --pidfile "$data/redis.pid" \
        --logfile "$data/redis.log" --protected-mode yes 8>&-); then
      die "redis-server failed to start; see $data/redis.log"
    fi
    local deadline reply
    deadline=$(($(date +%s) + timeout))
    while :; do
      reply=$(cli "$port" ping 2>/dev/null || true)
      if [[ "$reply" == PONG ]] && pid=$(running_pid "$data"); then
        log "redis-server pid $pid ready on $HOST:$port (data $data) in $(( $(now_ms) - t0 ))ms"
        echo "redis://$HOST:$port"
        return 0
      fi
      # The daemon writes its pid file right after forking; without one after a moment it has died.
      if [[ -f "$data/redis.pid" ]] && ! pid_alive "$(cat "$data/redis.pid")" ||
         tail -c +"$((offset + 1))" "$data/redis.log" 2>/dev/null | grep -q -e 'Address already in use' -e 'Could not create server TCP'; then
        if ((pick)) && tail -c +"$((offset + 1))" "$data/redis.log" | grep -q 'Address already in use'; then
          log "port clash on $port; trying another"
          continue 2
        fi
        tail -c +"$((offset + 1))" "$data/redis.log" | tail -n 20 >&2 || true
        die "redis-server exited during start-up"
      fi
      if (($(date +%s) >= deadline)); then
        tail -n 20 "$data/redis.log" >&2 || true
        if [[ -f "$data/redis.pid" ]]; then kill -KILL "$(cat "$data/redis.pid")" 2>/dev/null || true; fi
        die "redis-server did not answer PING within ${timeout}s"
      fi
      sleep 0.02
    done
  done
  die "no free port found"
}

cmd_stop() {
  local data="" timeout=20 mode=save
  while (($#)); do
    case "$1" in
      --data-dir) data="$2"; shift 2 ;;
      --timeout) timeout="$2"; shift 2 ;;
      --nosave) mode="nosave"; shift ;;
      --kill) mode="kill"; shift ;;
      *) die "stop: unknown option $1" ;;
    esac
  done
  data="${data:-$(default_data_dir)}"
  [[ -d "$data" ]] || { log "no data dir $data; nothing to stop"; return 0; }
  data="$(cd "$data" && pwd -P)"
  local pid port=""
  if ! pid=$(running_pid "$data"); then
    rm -f "$data/redis.pid"
    log "no redis-server running from $data"
    return 0
  fi
  local t0 REDIS_PORT=""
  t0=$(now_ms)
  # shellcheck disable=SC1091
  [[ -f "$data/redis.env" ]] && source "$data/redis.env"
  port="$REDIS_PORT"
  case "$mode" in
    kill) kill -KILL "$pid" 2>/dev/null || true ;;
    *)
      # SHUTDOWN closes the connection without a reply; a failure here falls back to SIGTERM.
      if [[ -z "$port" ]] || ! cli "$port" shutdown "$mode" >/dev/null 2>&1 && pid_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
      fi
      ;;
  esac
  local deadline
  deadline=$(($(date +%s) + timeout))
  while pid_alive "$pid"; do
    if (($(date +%s) >= deadline)); then
      log "redis-server pid $pid still alive after ${timeout}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$(($(date +%s) + 10))
      while pid_alive "$pid"; do
        (($(date +%s) < deadline)) || die "pid $pid survived SIGKILL"
        sleep 0.02
      done
      break
    fi
    sleep 0.02
  done
  rm -f "$data/redis.pid"
  log "redis-server pid $pid stopped ($mode) in $(( $(now_ms) - t0 ))ms"
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
  local pid REDIS_PORT=""
  if [[ -d "$data" ]] && pid=$(running_pid "$(cd "$data" && pwd -P)"); then
    # shellcheck disable=SC1091
    source "$data/redis.env"
    log "running: pid $pid"
    echo "redis://$HOST:$REDIS_PORT"
  else
    log "not running"
    return 1
  fi
}

case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) echo "usage: $0 install | start [--port N] [--data-dir D] [--fresh] [--timeout S] | stop [--data-dir D] [--nosave] [--kill] [--timeout S] | status [--data-dir D]" >&2; exit 2 ;;
esac
