#!/usr/bin/env bash
# gemm_rows with X read at L2 (ld.global.cg): X is written by the kernel before,
# which runs on while this one starts (PDL), so X must not come through the
# non-coherent path. Checks at 12-64 sessions and a 40-token first chunk,
# then Mistral-7B A/B against cuBLAS.
set -u
B=.device/bin-perf/streamsink_gpu
M=tests/fixtures/models
O=$OUT
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
V="--factor 3 --window 128 --first-chunk 40"
{
timeout 100 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 $V --sessions 16; echo "exit $?"
timeout 100 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 $V --sessions 40; echo "exit $?"
timeout 100 $B versus /tmp/w/llama-hd128-g8 --dtype fp16 $V --sessions 24; echo "exit $?"
STREAMSINK_GEMM_ROWS_BLOCKS=5 timeout 100 $B versus /tmp/w/llama-hd128-g2 --dtype bf16 $V --sessions 12; echo "exit $? (5 blocks)"
} > $O/checks.jsonl 2>&1
echo "checks pass $(grep -c '"pass":true' $O/checks.jsonl) fail $(grep -c '"pass":false' $O/checks.jsonl)"; grep "exit [1-9]" $O/checks.jsonl | head -3
for g in 0 64 0 64; do
  echo "== STREAMSINK_GEMM_ROWS=$g"
  STREAMSINK_GEMM_ROWS=$g timeout 100 $B bench --sections decode --shapes mistral-7b --batches 16,32 --no-max-batch 2>&1 >/dev/null | grep "^decode"
done 2>&1 | tee $O/ab28.log
