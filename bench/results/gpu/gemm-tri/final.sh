#!/usr/bin/env bash
# The three device calls of this stop's final build (96482cc), as run:
#   checks: gemm_rows_check, the engine's gemm_rows checks at 12-40 sessions,
#           memcheck at 24 sessions, parity, versus and snapshot
#           (results: ../parity.jsonl ../versus.jsonl ../snapshot.jsonl,
#           versus-gemm-rows.jsonl, memcheck-gemm-rows.log, gemm-rows-check-final.log)
#   bench:  ../gpu-bench.json and ../gpu-bench.log
#   ab3:    gemm_rows at 48/64 Mistral rows and at 16/32 Llama rows against cuBLAS (ab3.log)
set -u
B=.device/bin-perf/streamsink_gpu
case ${1:-} in
  checks) STREAMSINK_GPU_BIN=$B STREAMSINK_GEMM_CHECK_BIN=.device/bin-perf/gemm_rows_check OUT=$OUT/c bash tools/cuda/device-check.sh gemm checks ;;
  bench) STREAMSINK_GPU_BIN=$B OUT=$OUT/b bash tools/cuda/device-check.sh bench ;;
  ab3)
    for rep in 1 2; do
      for g in 32 64; do
        echo "== STREAMSINK_GEMM_ROWS=$g (48/64 rows decide 64)"
        STREAMSINK_GEMM_ROWS=$g timeout 100 $B bench --sections decode --shapes mistral-7b --batches 48,64 --no-max-batch 2>&1 >/dev/null | grep "^decode"
      done
      for g in 0 32; do
        echo "== STREAMSINK_GEMM_ROWS=$g"
        STREAMSINK_GEMM_ROWS=$g timeout 100 $B bench --sections decode --shapes llama2-7b --batches 16,32 --no-max-batch 2>&1 >/dev/null | grep "^decode"
      done
    done 2>&1 | tee $OUT/ab3.log ;;
esac
