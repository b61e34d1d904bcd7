#!/usr/bin/env bash
# Everything the test suite needs beyond `npm install`, installed from the
# registries and cached (~/.cache/streamsink): Java + Maven for Kafka 3.9
# (KRaft, from Maven Central jars), Debian's redis-server, and the Helm chart
# tools (helm from the Go module proxy, Kubernetes schema validators). Runs as
# npm's `pretest`, so `npm test` on a fresh machine sets itself up.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -q
    apt-get install -y -q openjdk-17-jre-headless maven
  else
    echo "test-setup: Kafka needs java (17) and mvn (install them or run as root with apt-get)" >&2
    exit 1
  fi
fi
bash deploy/local/redis.sh install
bash deploy/local/kafka.sh fetch

# Chart checks: helm lint/template and Kubernetes schema validation.
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"
python3 -m venv --help >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q python3-venv; }
bash tools/helm/check.sh
