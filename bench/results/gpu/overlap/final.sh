#!/usr/bin/env bash
# This stop's final build, as run:
#   a: the whole bench (../gpu-bench.json, .log), then Mistral-7B at 236
#      sessions with the logits copied to the host, last stop's build (base)
#      against this one alternating (ab-236.log)
#   b: parity, versus, snapshot, next (../*.jsonl), wide8, and memcheck over
#      the merged decode path and next
set -u
B=.device/bin-final/streamsink_gpu
case ${1:-} in
  a)
    STREAMSINK_GPU_BIN=$B OUT=$OUT/b timeout 400 bash tools/cuda/device-check.sh bench
    for rep in 1 2; do
      for v in base final; do
        echo "== $v"; timeout 90 .device/bin-$v/streamsink_gpu bench --sections decode --shapes mistral-7b --batches 236 --no-max-batch 2>&1 >/dev/null | grep "^decode"
      done
    done 2>&1 | tee $OUT/ab-236.log ;;
  b)
    STREAMSINK_GPU_BIN=$B OUT=$OUT/c timeout 480 bash tools/cuda/device-check.sh checks wide8
    python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
    timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 --factor 2 --window 600 --first-chunk 40 --sessions 3 > $OUT/memcheck-versus.log 2>&1
    echo "memcheck versus exit $?"; grep -m2 "split\|merge" $OUT/memcheck-versus.log; tail -1 $OUT/memcheck-versus.log
    timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 $B next tests/fixtures/models/llama-gqa --dtype bf16 > $OUT/memcheck-next.log 2>&1
    echo "memcheck next exit $?"; tail -1 $OUT/memcheck-next.log ;;
esac
