#!/usr/bin/env bash
# The device calls of this stop's final build, as run:
#   a: the whole bench (../gpu-bench.json, .log) and the gemm section
#      (gemm_rows_check, engine checks at 12-40 sessions, memcheck at 24)
#   b: parity, versus and snapshot (../parity.jsonl ../versus.jsonl
#      ../snapshot.jsonl) and the 8-session head_dim-128 checks (wide8)
set -u
B=.device/bin-perf/streamsink_gpu
case ${1:-} in
  a) STREAMSINK_GPU_BIN=$B OUT=$OUT/b bash tools/cuda/device-check.sh bench
     STREAMSINK_GPU_BIN=$B STREAMSINK_GEMM_CHECK_BIN=.device/bin-perf/gemm_rows_check OUT=$OUT/c bash tools/cuda/device-check.sh gemm ;;
  b) STREAMSINK_GPU_BIN=$B OUT=$OUT/c bash tools/cuda/device-check.sh checks wide8 ;;
esac
# c: old (STREAMSINK_ATTN_MERGE=0 STREAMSINK_ATTN_MMA_BLOCKS=2
#    STREAMSINK_GLU_ROUNDED=0: the last stop's paths) against new, three
#    alternating runs (ab7.log), after call a's bench came out slower at 32
#    sessions; then call b's checks.
if [[ ${1:-} == c ]]; then
  for rep in 1 2 3; do
    for v in old new; do
      echo "== $v"
      if [[ $v == old ]]; then e="STREAMSINK_ATTN_MERGE=0 STREAMSINK_ATTN_MMA_BLOCKS=2 STREAMSINK_GLU_ROUNDED=0"; else e=""; fi
      env $e timeout 60 $B bench --sections decode --shapes mistral-7b --batches 32,236 --no-max-batch 2>&1 >/dev/null | grep "^decode"
      env $e timeout 60 $B bench --sections decode --shapes llama2-7b --batches 1,32 --no-max-batch 2>&1 >/dev/null | grep "^decode"
    done
  done 2>&1 | tee $OUT/ab7.log
  STREAMSINK_GPU_BIN=$B OUT=$OUT/c timeout 330 bash tools/cuda/device-check.sh checks wide8
  echo "checks exit $?"
fi
