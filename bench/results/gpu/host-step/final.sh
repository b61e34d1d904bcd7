#!/usr/bin/env bash
# This stop's final build, as run:
#   a: the whole bench (../gpu-bench.json, .log), then the cluster merge's
#      default path checked (8 sessions at 2 splits, and memcheck)
#   b: parity, versus, snapshot, next (../*.jsonl) and wide8
set -u
B=.device/bin-final/streamsink_gpu
case ${1:-} in
  a)
    STREAMSINK_GPU_BIN=$B OUT=$OUT/b timeout 400 bash tools/cuda/device-check.sh bench
    python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
    STREAMSINK_ATTN_CLUSTER=1 timeout 100 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 --factor 2 --window 600 --first-chunk 40 --sessions 8 2>&1 | tee $OUT/checks-cluster-default.log
    STREAMSINK_ATTN_CLUSTER=1 timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 --factor 2 --window 300 --first-chunk 40 --sessions 6 > $OUT/memcheck-cluster-default.log 2>&1
    echo "memcheck exit $?"; tail -1 $OUT/memcheck-cluster-default.log ;;
  b) STREAMSINK_GPU_BIN=$B OUT=$OUT/c timeout 560 bash tools/cuda/device-check.sh checks wide8 ;;
esac
