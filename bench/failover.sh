#!/usr/bin/env bash
# The failover figures in one command (npm run bench:failover): starts a local
# Kafka 3.9 (KRaft) and a Redis that persists every write (AOF), builds the
# TypeScript, runs `streamsink bench failover` against them and writes
# bench/results/failover.json and failover.svg. Extra arguments go to the
# benchmark (e.g. --seconds 30 --kills 5). STREAMSINK_BENCH_REDIS_AOF=0 runs
# Redis without persistence (on a shared 2-core machine its fsyncs and AOF
# rewrites compete with the worker for CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
cleanup() {
  bash deploy/local/kafka.sh stop --data-dir "$work/kafka" >/dev/null 2>&1 || true
  bash deploy/local/redis.sh stop --nosave --data-dir "$work/redis" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
bash deploy/local/kafka.sh fetch >&2
brokers=$(bash deploy/local/kafka.sh start --port 0 --controller-port 0 --data-dir "$work/kafka" | tail -n 1)
aof=(--appendonly)
[[ "${STREAMSINK_BENCH_REDIS_AOF:-1}" == 0 ]] && aof=()
redis=$(bash deploy/local/redis.sh start --port 0 --data-dir "$work/redis" "${aof[@]}" | tail -n 1)
npx tsc -p tsconfig.json
node dist/services/cli/main.js bench failover --kafka-brokers "$brokers" --redis-url "$redis" \
  --out bench/results/failover.json --plot bench/results/failover.svg "$@"
