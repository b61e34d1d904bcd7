#!/usr/bin/env bash
# A/B: per-shape cuBLASLt plans (GEMM_TUNE) and norm threads per row, Mistral-7B; checks with cuBLAS-sized batches.
set -u
B=.device/bin-perf/streamsink_gpu
O=$OUT
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
{
timeout 100 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 --factor 3 --window 128 --first-chunk 100 --sessions 12; echo "exit $?"
timeout 100 $B versus /tmp/w/llama-hd128-g1 --dtype fp16 --factor 3 --window 128 --first-chunk 100 --sessions 10; echo "exit $?"
} > $O/versus-tune.jsonl 2>&1
echo "versus pass $(grep -c '"pass":true' $O/versus-tune.jsonl) fail $(grep -c '"pass":false' $O/versus-tune.jsonl)"; grep "exit [1-9]" $O/versus-tune.jsonl | head -3
run() { echo "== $1"; env $1 timeout 110 $B bench --sections decode --shapes mistral-7b 2>&1 >/dev/null | grep "^decode"; }
{
for rep in 1 2; do run "STREAMSINK_GEMM_TUNE=1"; run "STREAMSINK_GEMM_TUNE=0"; done
run "STREAMSINK_NORM_THREADS=256"; run "STREAMSINK_NORM_THREADS=512"
} 2>&1 | tee $O/ab18.log
