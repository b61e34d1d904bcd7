#!/usr/bin/env bash
# Call 5 (call 4 ran out of time in its checks, 22/22 passed): the cluster
# merge A/B, three alternating runs (ab-cluster.log), then memcheck with it.
set -u
O=$OUT
B=.device/bin-s19d/streamsink_gpu
for rep in 1 2 3; do
  for c in 0 1; do
    echo "== STREAMSINK_ATTN_CLUSTER=$c"
    STREAMSINK_ATTN_CLUSTER=$c timeout 60 $B bench --sections decode --shapes llama2-7b --batches 1,8 --no-max-batch 2>&1 >/dev/null | grep "^decode\|clusters"
    STREAMSINK_ATTN_CLUSTER=$c timeout 60 $B bench --sections decode --shapes mistral-7b --batches 1 --no-max-batch 2>&1 >/dev/null | grep "^decode\|clusters"
  done
done 2>&1 | tee $O/ab-cluster.log
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
STREAMSINK_ATTN_CLUSTER=1 timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 --factor 2 --window 300 --first-chunk 40 --sessions 3 > $O/memcheck-cluster.log 2>&1
echo "memcheck exit $?"; grep -c '"pass":true' $O/memcheck-cluster.log; grep "clusters" $O/memcheck-cluster.log | sort | uniq -c; tail -2 $O/memcheck-cluster.log
