#!/usr/bin/env bash
# The split merge in the attention kernel (gpu::finish_split; no attn_combine
# on decode steps with <= STREAMSINK_ATTN_MERGE splits) and 3 attention blocks
# per SM from STREAMSINK_ATTN_WIDE=8 unsplit blocks per SM on: engine checks
# (merge on: window 128 gives 1-3 splits), memcheck, then Mistral-7B A/B
# against the old path (MERGE=0, 2 blocks per SM) in one call (ab3.log).
set -u
O=$OUT
B=.device/bin-perf/streamsink_gpu
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
V="--factor 3 --window 128 --first-chunk 40"
{
timeout 100 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 $V --sessions 24; echo "exit $?"
timeout 100 $B versus /tmp/w/llama-hd128-g4 --dtype fp16 $V --sessions 8; echo "exit $?"
timeout 100 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 $V --sessions 8; echo "exit $?"
timeout 100 $B versus /tmp/w/llama-hd128-g2 --dtype fp32 $V --sessions 4; echo "exit $?"
STREAMSINK_ATTN_MMA_BLOCKS=3 timeout 100 $B versus /tmp/w/llama-hd128-g8 --dtype bf16 $V --sessions 16; echo "exit $? (3 blocks)"
} > $O/checks-merge.jsonl 2>&1
echo "checks pass $(grep -c '"pass":true' $O/checks-merge.jsonl) fail $(grep -c '"pass":false' $O/checks-merge.jsonl)"; grep "exit [1-9]" $O/checks-merge.jsonl | head -3
grep '"pass":false' $O/checks-merge.jsonl | head -3 | cut -c1-300
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 \
  --factor 2 --window 128 --first-chunk 40 --sessions 8 > $O/memcheck-merge.log 2>&1; echo "memcheck exit $?" | tee -a $O/memcheck-merge.log; tail -2 $O/memcheck-merge.log
for rep in 1 2; do
  for v in old new; do
    echo "== $v"
    if [[ $v == old ]]; then e="STREAMSINK_ATTN_MERGE=0 STREAMSINK_ATTN_MMA_BLOCKS=2"; else e=""; fi
    env $e timeout 90 $B bench --sections decode --shapes mistral-7b --batches 8,32,128,236 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  done
  echo "== merge, 3 blocks at 128"; STREAMSINK_ATTN_MMA_BLOCKS=3 timeout 60 $B bench --sections decode --shapes mistral-7b --batches 128 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  echo "== no merge, 3 blocks at 236"; STREAMSINK_ATTN_MERGE=0 STREAMSINK_ATTN_MMA_BLOCKS=3 timeout 60 $B bench --sections decode --shapes mistral-7b --batches 236 --no-max-batch 2>&1 >/dev/null | grep "^decode"
done 2>&1 | tee $O/ab3.log
