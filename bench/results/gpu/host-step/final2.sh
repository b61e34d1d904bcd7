#!/usr/bin/env bash
# The final build after the device log-softmax (ForwardSequence::logprobs):
# the GPU engine's log-probs come from the device, so the host takes no
# exponentials. Checks (parity, versus, snapshot, next with the fp32 CPU
# reference, wide8) and the decode bench (greedy and distribution steps).
set -u
B=.device/bin-final2/streamsink_gpu
STREAMSINK_GPU_BIN=$B OUT=$OUT/c timeout 450 bash tools/cuda/device-check.sh checks wide8 > $OUT/checks.log 2>&1
echo "checks exit $?"
for f in $OUT/c/*.jsonl; do echo "$(basename $f) pass $(grep -c '"pass":true' $f) fail $(grep -c '"pass":false' $f)"; done
grep '"pass":false' $OUT/c/*.jsonl | head -5
grep next_token $OUT/c/next.jsonl | grep fp32 | head -2
timeout 120 $B bench --sections decode --shapes llama2-7b,mistral-7b --batches 1,8,32 --out $OUT/bench.json 2>&1 | grep "^decode" | tee $OUT/bench.log
