#!/usr/bin/env bash
# gemm_rows with its W through a ring of 5-6 units in shared memory (each
# thread cp.asyncs the pieces it uses; 160-192 KB of W in flight per SM):
# the kernel check, engine checks at 16-40 sessions, Mistral-7B A/B against
# cuBLAS at 16/32/64 sessions, then per-launch ncu at 32 sessions.
set -u
B=.device/bin-perf/streamsink_gpu
O=$OUT
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $O/gpu.txt
timeout 60 .device/bin-perf/gemm_rows_check > $O/gemm-rows-check.log 2>&1; echo "gemm_rows_check exit $?" | tee -a $O/gemm-rows-check.log
tail -3 $O/gemm-rows-check.log
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
V="--factor 3 --window 128 --first-chunk 40"
{
timeout 100 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 $V --sessions 16; echo "exit $?"
STREAMSINK_GEMM_ROWS=64 timeout 100 $B versus /tmp/w/llama-hd128-g4 --dtype fp16 $V --sessions 32; echo "exit $?"
STREAMSINK_GEMM_ROWS=64 timeout 100 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 $V --sessions 40; echo "exit $?"
STREAMSINK_GEMM_ROWS=64 timeout 100 $B versus /tmp/w/llama-hd128-g8 --dtype bf16 $V --sessions 24; echo "exit $?"
STREAMSINK_GEMM_ROWS=64 STREAMSINK_GEMM_ROWS_BLOCKS=5 timeout 100 $B versus /tmp/w/llama-hd128-g2 --dtype bf16 $V --sessions 12; echo "exit $? (5 blocks)"
} > $O/checks.jsonl 2>&1
echo "checks pass $(grep -c '"pass":true' $O/checks.jsonl) fail $(grep -c '"pass":false' $O/checks.jsonl)"; grep "exit [1-9]" $O/checks.jsonl | head -3
for g in 0 64 0 64; do
  echo "== STREAMSINK_GEMM_ROWS=$g"
  STREAMSINK_GEMM_ROWS=$g timeout 100 $B bench --sections decode --shapes mistral-7b --batches 16,32,64 --no-max-batch 2>&1 >/dev/null | grep "^decode"
done 2>&1 | tee $O/ab1.log
STREAMSINK_GEMM_ROWS=64 STREAMSINK_PROFILE_STEP=1 timeout 120 ncu --profile-from-start off -k regex:gemm_rows --launch-count 4 \
  --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__cycles_active.avg.pct_of_peak_sustained_elapsed,launch__grid_size \
  $B bench --sections decode --shapes mistral-7b --batches 32 --no-max-batch 2>&1 | grep -E "gemm_rows|duration|dram__|sm__cycles|grid_size" | tee $O/ncu1.log
