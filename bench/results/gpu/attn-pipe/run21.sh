#!/usr/bin/env bash
# Review commit: the bf16/fp16 RoPE tables are made only for 2-byte types. Checks plus the Mistral decode bench.
set -u
B=.device/bin-perf/streamsink_gpu
M=tests/fixtures/models
O=$OUT
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
{
for d in fp32 bf16 fp16; do timeout 60 $B parity $M tests/fixtures/golden --dtype $d; echo "exit $?"; done
for d in fp32 bf16; do timeout 60 $B versus $M/llama-gqa --dtype $d --factor 10; echo "exit $?"; done
for d in bf16 fp16; do timeout 90 $B versus /tmp/w/llama-hd128-g4 --dtype $d --factor 3 --window 128 --first-chunk 100 --sessions 4; echo "exit $?"; done
} > $O/checks-review.jsonl 2>&1
echo "checks pass $(grep -c '"pass":true' $O/checks-review.jsonl) fail $(grep -c '"pass":false' $O/checks-review.jsonl)"; grep "exit [1-9]" $O/checks-review.jsonl | head -3
timeout 120 $B bench --sections decode --shapes mistral-7b 2>&1 >/dev/null | grep "^decode" | tee $O/bench-review.log
