#!/usr/bin/env bash
# gemm_rows (9..64 rows on tensor cores, X staged in shared memory): checks at
# 12-64 sessions and a 40-token first chunk, a memcheck run, then Mistral-7B
# decode at 16/32/64 sessions with cuBLAS (STREAMSINK_GEMM_ROWS=0) and with
# gemm_rows, alternating.
set -u
B=.device/bin-perf/streamsink_gpu
M=tests/fixtures/models
O=$OUT
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
V="--factor 3 --window 128 --first-chunk 40"
{
for d in fp32 bf16 fp16; do timeout 60 $B parity $M tests/fixtures/golden --dtype $d; echo "exit $?"; done
timeout 90 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 $V --sessions 16; echo "exit $?"
timeout 90 $B versus /tmp/w/llama-hd128-g4 --dtype fp16 $V --sessions 33; echo "exit $?"
timeout 120 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 $V --sessions 64; echo "exit $?"
timeout 90 $B versus /tmp/w/llama-hd128-g8 --dtype bf16 $V --sessions 24; echo "exit $?"
STREAMSINK_GEMM_ROWS_SPLITS=1 timeout 90 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 $V --sessions 16; echo "exit $? (splits 1)"
} > $O/checks.jsonl 2>&1
echo "checks pass $(grep -c '"pass":true' $O/checks.jsonl) fail $(grep -c '"pass":false' $O/checks.jsonl)"; grep "exit [1-9]" $O/checks.jsonl | head -3
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 --factor 2 --window 128 \
  --first-chunk 40 --sessions 16 > $O/memcheck.log 2>&1; echo "memcheck exit $?" | tee -a $O/memcheck.log; tail -2 $O/memcheck.log
for i in 1 2; do
  for g in 0 64; do
    echo "== STREAMSINK_GEMM_ROWS=$g"
    STREAMSINK_GEMM_ROWS=$g timeout 100 $B bench --sections decode --shapes mistral-7b --batches 16,32,64 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  done
done 2>&1 | tee $O/ab22.log
