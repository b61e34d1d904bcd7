#!/usr/bin/env bash
# The stage count as a parameter (rows_w_stages): gen3 = tri1 rewritten as a
# loop (3 stages for every tile count), gen4 = 4 stages at 32 rows (210
# registers, 1 block/SM). Checks and memcheck, then Mistral-7B A/B at 16 and
# 32 sessions against cuBLAS and tri1.
set -u
O=$OUT
for v in gen3 gen4; do timeout 60 .device/bin-$v/gemm_rows_check | tail -1 | sed "s/^/$v gemm_rows_check: /"; done | tee $O/gemm-rows-check.log
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
V="--factor 3 --window 128 --first-chunk 40"
{
for v in gen3 gen4; do
STREAMSINK_GEMM_ROWS=64 timeout 100 .device/bin-$v/streamsink_gpu versus /tmp/w/llama-hd128-g4 --dtype bf16 $V --sessions 24; echo "exit $?"
STREAMSINK_GEMM_ROWS=64 timeout 100 .device/bin-$v/streamsink_gpu versus /tmp/w/llama-hd128-g2 --dtype fp16 $V --sessions 20; echo "exit $?"
done
} > $O/checks.jsonl 2>&1
echo "checks pass $(grep -c '"pass":true' $O/checks.jsonl) fail $(grep -c '"pass":false' $O/checks.jsonl)"; grep "exit [1-9]" $O/checks.jsonl | head -3
STREAMSINK_GEMM_ROWS=64 timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 .device/bin-gen3/streamsink_gpu versus /tmp/w/llama-hd128-g4 --dtype bf16 \
  --factor 2 --window 128 --first-chunk 40 --sessions 24 > $O/memcheck.log 2>&1; echo "memcheck exit $?" | tee -a $O/memcheck.log; tail -2 $O/memcheck.log
for rep in 1 2; do
  for v in old:0 tri1:64 gen3:64 gen4:64; do
    b=${v%%:*}; g=${v##*:}
    echo "== $b STREAMSINK_GEMM_ROWS=$g"
    STREAMSINK_GEMM_ROWS=$g timeout 100 .device/bin-$b/streamsink_gpu bench --sections decode --shapes mistral-7b --batches 16,32 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  done
done 2>&1 | tee $O/ab2.log
