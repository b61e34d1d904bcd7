#!/usr/bin/env bash
# Every measurement of docs/REPRODUCTION.md, made with the product's own CLI
# (`streamsink score`, `plot`) on the CPU backend. Run from the repository
# root after `npm install` (or `npx tsc -p tsconfig.json`):
#
#   bash tools/train/quality_runs.sh [RESULTS_DIR]      # default .traindata/results
#   python3 tools/train/tables.py RESULTS_DIR           # the markdown tables
#
# The `recompute` runs cost one forward pass over 256 tokens per token
# (about 30 minutes each for 13k tokens on 2 cores); SKIP_RECOMPUTE=1 leaves
# them out, SKIP_SINK_RECOMPUTE=1 only the sink-token model's.
set -euo pipefail
R=${1:-.traindata/results}
mkdir -p "$R" docs/reproduction
M=models/streamsink-llama-7m
MS=models/streamsink-llama-7m-sink
T=tests/quality/data/mobydick-heldout-13k.txt
CLI="node dist/services/cli/main.js"
score() { local out=$1; shift; [ -s "$R/$out.json" ] || $CLI score --text "$T" --out "$R/$out.json" "$@" 2>/dev/null; }

# Table 1/2: cache of 256 slots (the training context), vanilla and sink-token model.
for tag in v s; do
  model=$M; [ $tag = s ] && model=$MS
  score $tag-dense --model $model --policy dense
  score $tag-window --model $model --policy window --window 256
  for k in 1 2 4 8; do score $tag-sinks$k --model $model --policy sinks --sinks $k --window $((256 - k)); done
done
[ "${SKIP_RECOMPUTE:-0}" = 1 ] || score v-recompute --model $M --policy recompute --window 256
[ "${SKIP_RECOMPUTE:-0}" = 1 ] || [ "${SKIP_SINK_RECOMPUTE:-0}" = 1 ] || score s-recompute --model $MS --policy recompute --window 256
# The sink-token model's recompute without its sink token in the windows (the text tokens alone).
[ "${SKIP_RECOMPUTE:-0}" = 1 ] || [ "${SKIP_SINK_RECOMPUTE:-0}" = 1 ] ||
  score s-recompute-nosink --model $MS --policy recompute --window 256 --sink-token none

# Table 3 needs nothing more: the sink-token model at 0 sinks is s-window (its
# sink token, put at the start, has been evicted), at 1/2/4 sinks s-sinks1/2/4.

# Figure 3: NLL along the stream, vanilla model.
if [ -s "$R/v-recompute.json" ]; then
  $CLI score --model $M --text "$T" --policy sinks --sinks 4 --window 252 --plot docs/reproduction/fig3-nll-vanilla.svg \
    --compare "$R/v-dense.json" --compare "$R/v-window.json" --compare "$R/v-recompute.json" \
    --plot-points 7 --title "streamsink-llama-7m, held-out Moby Dick, cache 256" 2>/dev/null
fi
# The first 2,000 tokens in finer steps, where dense leaves the others.
node dist/services/cli/main.js plot --out docs/reproduction/fig3-nll-vanilla-start.svg --first 2000 --points 10 \
  --title "streamsink-llama-7m, first 2,000 tokens" \
  "$R/v-dense.json" "$R/v-window.json" "$R/v-recompute.json" "$R/v-sinks4.json"
S_RE=(); [ -s "$R/s-recompute.json" ] && S_RE=("$R/s-recompute.json")
node dist/services/cli/main.js plot --out docs/reproduction/fig3-nll-sink-model.svg --points 7 \
  --title "streamsink-llama-7m-sink, held-out Moby Dick, cache 256" \
  "$R/s-dense.json" "$R/s-window.json" "${S_RE[@]}" "$R/s-sinks1.json" "$R/s-sinks4.json"

# Sink metric by layer (PyTorch on the CPU; writes MODEL/sink_metric.json), then its plot.
for model in $M $MS; do
  python3 tools/train/sink_metric.py --model $model --text tests/quality/data/mobydick-heldout-13k.txt --windows 32 >/dev/null
done
node dist/services/cli/main.js plot --out docs/reproduction/sink-metric-by-layer.svg $M/sink_metric.json $MS/sink_metric.json
