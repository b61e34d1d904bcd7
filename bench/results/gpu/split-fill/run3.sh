#!/usr/bin/env bash
# cuBLAS's [gate | up] rounded to T (STREAMSINK_GLU_ROUNDED, past gemm_rows'
# 32 rows) with the 8-wide swiglu_rows; the in-kernel split merge at more
# splits (STREAMSINK_ATTN_MERGE=64: batch 1 and 8 too; with ATTN_FILL=99 at
# 236 sessions: 5 splits). Checks with those paths on (prefill chunks of 100
# rows and 40 sessions take cuBLAS; ATTN_CHUNK=32 gives up to 5 splits), then
# A/B in one call (ab4.log).
set -u
O=$OUT
B=.device/bin-perf/streamsink_gpu
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
V="--factor 3 --window 128"
{
timeout 100 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 $V --first-chunk 100 --sessions 40; echo "exit $?"
timeout 100 $B versus /tmp/w/llama-hd128-g4 --dtype fp16 $V --first-chunk 100 --sessions 40; echo "exit $?"
timeout 100 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 $V --first-chunk 100 --sessions 4; echo "exit $?"
STREAMSINK_ATTN_CHUNK=32 STREAMSINK_ATTN_MERGE=64 timeout 100 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 $V --first-chunk 40 --sessions 2; echo "exit $? (merge, chunk 32)"
STREAMSINK_ATTN_CHUNK=32 STREAMSINK_ATTN_MERGE=64 timeout 100 $B versus /tmp/w/llama-hd128-g8 --dtype fp16 $V --first-chunk 40 --sessions 2; echo "exit $? (merge, chunk 32)"
} > $O/checks-glu.jsonl 2>&1
echo "checks pass $(grep -c '"pass":true' $O/checks-glu.jsonl) fail $(grep -c '"pass":false' $O/checks-glu.jsonl)"; grep "exit [1-9]" $O/checks-glu.jsonl | head -3
grep '"pass":false' $O/checks-glu.jsonl | head -3 | cut -c1-300
for rep in 1 2; do
  for v in 0 1; do
    echo "== STREAMSINK_GLU_ROUNDED=$v"
    STREAMSINK_GLU_ROUNDED=$v timeout 90 $B bench --sections decode --shapes mistral-7b --batches 128,236 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  done
  echo "== 5 splits merged at 236"; STREAMSINK_ATTN_MERGE=8 STREAMSINK_ATTN_FILL=99 timeout 60 $B bench --sections decode --shapes mistral-7b --batches 236 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  for m in 4 64; do
    echo "== STREAMSINK_ATTN_MERGE=$m"
    STREAMSINK_ATTN_MERGE=$m timeout 60 $B bench --sections decode --shapes llama2-7b --batches 1 --no-max-batch 2>&1 >/dev/null | grep "^decode"
    STREAMSINK_ATTN_MERGE=$m timeout 60 $B bench --sections decode --shapes mistral-7b --batches 1,8 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  done
done 2>&1 | tee $O/ab4.log
