#!/usr/bin/env bash
# On the GPU host: the Node service with the CUDA-built addon (packed by
# tools/cuda/node-pack.sh; carry .device/nodepack and dist). `streamsink score`
# on the CUDA and CPU backends, then `streamsink serve` (backend auto) and a
# generation over gRPC. Results in $OUT (default bench/results/gpu/node).
cd "$(dirname "$0")/../.."
OUT="${OUT:-bench/results/gpu/node}"
mkdir -p "$OUT"
P=.device/nodepack
mkdir -p /tmp/n && xz -dc $P/node.xz > /tmp/n/node && chmod +x /tmp/n/node && export PATH=/tmp/n:$PATH
tar xJf $P/nm.tar.xz && xz -dc $P/streamsink.node.xz > /tmp/n/streamsink.node
export STREAMSINK_ADDON=/tmp/n/streamsink.node
node --version; nvidia-smi --query-gpu=name --format=csv,noheader
S="node dist/services/cli/main.js"
T=tests/quality/data/mobydick-heldout-13k.txt
{
for b in cuda cpu; do $S score --model models/streamsink-llama-7m --text $T --policy sinks --sinks 4 --window 252 --backend $b --json; done
$S score --model models/streamsink-llama-7m-sink --text $T --policy recompute --window 256 --backend cuda --json
$S score --model models/streamsink-llama-7m-sink --text $T --policy sinks --sinks 1 --window 255 --backend cuda --json
} 2>&1 | tee $OUT/node-score.jsonl | cut -c1-400
$S serve --backend auto --metrics-port 9464 > $OUT/serve.log 2>&1 &
for i in $(seq 60); do sleep 1; $S generate --server 127.0.0.1:50051 --session probe --prompt "x" --max-new-tokens 1 >/dev/null 2>&1 && break; done
echo "serve up after ${i}s"
$S generate --server 127.0.0.1:50051 --session demo --prompt "def main():" --max-new-tokens 48 2>&1 | tee $OUT/generate.txt
curl -s localhost:9464/metrics | grep -v "^#" | grep -i -E "backend|device|decode_tokens|tokens_total" | head -10 | tee $OUT/metrics.txt
head -20 $OUT/serve.log
kill %1 2>/dev/null; sleep 1
