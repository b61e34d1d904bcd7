#!/usr/bin/env bash
# gemm_rows with two stages of W in flight in registers instead of one
# (w0/w1/w2): tri2 keeps 2 blocks/SM at 32 rows (128 registers, 112 bytes of
# stack), tri1 runs 32 rows at 1 block/SM (178 registers). Checks, then
# Mistral-7B A/B at 16 and 32 sessions against cuBLAS and the one-stage build.
set -u
O=$OUT
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $O/gpu.txt
for v in tri2 tri1; do timeout 60 .device/bin-$v/gemm_rows_check | tail -1 | sed "s/^/$v gemm_rows_check: /"; done | tee $O/gemm-rows-check.log
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
V="--factor 3 --window 128 --first-chunk 40"
{
for v in tri2 tri1; do
STREAMSINK_GEMM_ROWS=64 timeout 100 .device/bin-$v/streamsink_gpu versus /tmp/w/llama-hd128-g4 --dtype bf16 $V --sessions 16; echo "exit $?"
STREAMSINK_GEMM_ROWS=64 timeout 100 .device/bin-$v/streamsink_gpu versus /tmp/w/llama-hd128-g8 --dtype fp16 $V --sessions 32; echo "exit $?"
done
} > $O/checks.jsonl 2>&1
echo "checks pass $(grep -c '"pass":true' $O/checks.jsonl) fail $(grep -c '"pass":false' $O/checks.jsonl)"; grep "exit [1-9]" $O/checks.jsonl | head -3
for rep in 1 2; do
  for v in old:0 old:64 tri2:64 tri1:64; do
    b=${v%%:*}; g=${v##*:}
    echo "== $b STREAMSINK_GEMM_ROWS=$g"
    STREAMSINK_GEMM_ROWS=$g timeout 100 .device/bin-$b/streamsink_gpu bench --sections decode --shapes mistral-7b --batches 16,32 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  done
done 2>&1 | tee $O/ab1.log
