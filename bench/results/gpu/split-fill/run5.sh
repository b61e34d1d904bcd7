#!/usr/bin/env bash
# cuBLASLt candidates timed over all layers' matrices (STREAMSINK_GEMM_TUNE=2
# logs each plan) against cublasGemmEx's default (=0), Mistral-7B at 64, 128
# and 236 sessions and Llama-2-7B at 64, alternating in one call (ab6.log);
# an engine check at 40 sessions (tuned cuBLAS GEMMs in its graphs).
set -u
O=$OUT
B=.device/bin-perf/streamsink_gpu
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
STREAMSINK_GEMM_TUNE=2 timeout 200 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 --factor 2 --window 128 --first-chunk 40 --sessions 40 > $O/checks-tune.jsonl 2>&1; echo "exit $?"
echo "checks pass $(grep -c '"pass":true' $O/checks-tune.jsonl) fail $(grep -c '"pass":false' $O/checks-tune.jsonl)"
for rep in 1 2; do
  for t in 0 2; do
    echo "== STREAMSINK_GEMM_TUNE=$t"
    STREAMSINK_GEMM_TUNE=$t timeout 100 $B bench --sections decode --shapes mistral-7b --batches 64,128,236 --no-max-batch 2>&1 >/dev/null | grep "^decode\|^gemm tune"
    STREAMSINK_GEMM_TUNE=$t timeout 60 $B bench --sections decode --shapes llama2-7b --batches 64 --no-max-batch 2>&1 >/dev/null | grep "^decode\|^gemm tune"
  done
done 2>&1 | tee $O/ab6.log
