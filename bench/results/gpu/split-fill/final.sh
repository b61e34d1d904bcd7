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
