#!/usr/bin/env bash
# compute-sanitizer memcheck over the last build (device log-softmax):
# `next` (next_top in place, logsoftmax_rows for the per-token log-probs
# pair) and a batched head_dim-128 run (cluster merge, per-token log-probs).
set -u
B=.device/bin-final2/streamsink_gpu
for d in bf16 fp32; do
  timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 $B next tests/fixtures/models/llama-gqa --dtype $d > $OUT/memcheck-next-$d.log 2>&1
  echo "memcheck next $d exit $?"; grep next_token $OUT/memcheck-next-$d.log | cut -c1-160; tail -1 $OUT/memcheck-next-$d.log
done
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 --factor 2 --window 300 --first-chunk 40 --sessions 6 > $OUT/memcheck-versus.log 2>&1
echo "memcheck versus exit $?"; grep -c '"pass":true' $OUT/memcheck-versus.log; tail -1 $OUT/memcheck-versus.log
