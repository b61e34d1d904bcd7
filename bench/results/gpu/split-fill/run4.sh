#!/usr/bin/env bash
# The in-kernel merge with a warp per query head and unrolled sums, at more
# splits (STREAMSINK_ATTN_MERGE=4|16|64; Llama-2-7B batch 1 has 16 splits,
# Mistral-7B batch 1 32) A/B (ab5.log); what each part costs in place at 236
# sessions (ablate236.log); ncu of one residual_norm and one swiglu_rows at
# 236 (ncu-norm236.txt).
set -u
O=$OUT
B=.device/bin-perf/streamsink_gpu
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
{
STREAMSINK_ATTN_CHUNK=32 STREAMSINK_ATTN_MERGE=64 timeout 100 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 --factor 3 --window 128 --first-chunk 40 --sessions 2; echo "exit $?"
STREAMSINK_ATTN_CHUNK=32 STREAMSINK_ATTN_MERGE=64 timeout 100 $B versus /tmp/w/llama-hd128-g4 --dtype fp16 --factor 3 --window 128 --first-chunk 40 --sessions 3; echo "exit $?"
} > $O/checks-merge2.jsonl 2>&1
echo "checks pass $(grep -c '"pass":true' $O/checks-merge2.jsonl) fail $(grep -c '"pass":false' $O/checks-merge2.jsonl)"; grep "exit [1-9]" $O/checks-merge2.jsonl | head -3
for rep in 1 2; do
  for m in 4 16 64; do
    echo "== STREAMSINK_ATTN_MERGE=$m"
    STREAMSINK_ATTN_MERGE=$m timeout 60 $B bench --sections decode --shapes llama2-7b --batches 1 --no-max-batch 2>&1 >/dev/null | grep "^decode"
    STREAMSINK_ATTN_MERGE=$m timeout 60 $B bench --sections decode --shapes mistral-7b --batches 1,8 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  done
done 2>&1 | tee $O/ab5.log
for a in none norm gateup down qkv oproj attention; do
  echo "== ABLATE=$a"
  STREAMSINK_ABLATE=$a timeout 60 $B bench --sections decode --shapes mistral-7b --batches 236 --no-max-batch 2>&1 >/dev/null | grep "^decode"
done 2>&1 | tee $O/ablate236.log
STREAMSINK_PROFILE_STEP=1 timeout 150 ncu --profile-from-start off -k regex:"residual_norm|swiglu_rows" --launch-skip 4 --launch-count 2 \
  --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
  $B bench --sections decode --shapes mistral-7b --batches 236 --no-max-batch > $O/ncu-norm236.txt 2>&1; echo "ncu exit $?"
grep -E "residual_norm|swiglu_rows|Duration|DRAM Throughput|Achieved Occupancy|Registers Per|Stall|Waves Per SM|Issued Warp|No Eligible" $O/ncu-norm236.txt | head -40
