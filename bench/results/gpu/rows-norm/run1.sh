#!/usr/bin/env bash
# The folded norms in gemm_rows (9-32 rows, STREAMSINK_ROWS_NORM): the
# kernel check with its new producer/consumer modes, engine checks at 12-40
# sessions (Llama-type: the folded path) and one with it off, memcheck at 24
# sessions, Mistral-7B / Llama-2-7B A/B, then the whole bench.
# Outcome: correct (gemm_rows_check PASS, 37/37 checks, memcheck clean) but
# slower at 32 rows (ab1.log), so it was not merged: rows-norm.patch against
# 46dbfbc. The bench in this call ran with it on (gpu-bench-rows-norm-on.*).
set -u
B=.device/bin-perf/streamsink_gpu
O=$OUT
timeout 60 .device/bin-perf/gemm_rows_check > $O/gemm-rows-check.log 2>&1; echo "gemm_rows_check exit $?" | tee -a $O/gemm-rows-check.log; tail -3 $O/gemm-rows-check.log
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
V="--factor 3 --window 128 --first-chunk 40"
{
timeout 100 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 $V --sessions 16; echo "exit $?"
timeout 100 $B versus /tmp/w/llama-hd128-g4 --dtype fp16 $V --sessions 24; echo "exit $?"
timeout 100 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 $V --sessions 12; echo "exit $?"
STREAMSINK_GEMM_ROWS=64 timeout 100 $B versus /tmp/w/llama-hd128-g2 --dtype bf16 $V --sessions 40; echo "exit $? (40)"
STREAMSINK_ROWS_NORM=0 timeout 100 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 $V --sessions 24; echo "exit $? (norm kernels)"
} > $O/checks.jsonl 2>&1
echo "checks pass $(grep -c '"pass":true' $O/checks.jsonl) fail $(grep -c '"pass":false' $O/checks.jsonl)"; grep "exit [1-9]" $O/checks.jsonl | head -3
grep '"pass":false' $O/checks.jsonl | head -3 | cut -c1-300
for rep in 1 2; do for g in 0 1; do
  echo "== STREAMSINK_ROWS_NORM=$g"
  STREAMSINK_ROWS_NORM=$g timeout 100 $B bench --sections decode --shapes mistral-7b --batches 16,32 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  STREAMSINK_ROWS_NORM=$g timeout 100 $B bench --sections decode --shapes llama2-7b --batches 32 --no-max-batch 2>&1 >/dev/null | grep "^decode"
done; done 2>&1 | tee $O/ab1.log
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 \
  --factor 2 --window 128 --first-chunk 40 --sessions 24 > $O/memcheck.log 2>&1; echo "memcheck exit $?" | tee -a $O/memcheck.log; tail -2 $O/memcheck.log
timeout 100 $B bench --out $O/gpu-bench.json 2> $O/gpu-bench.log >/dev/null; echo "bench exit $?"; grep -v "^\s*$" $O/gpu-bench.log | head -9
