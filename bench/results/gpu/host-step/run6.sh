#!/usr/bin/env bash
# Call 6: Llama-2-7B batch 1 with the cluster merge at fewer splits (16
# blocks per cluster fit only 28 clusters at once, call 5): 8 splits
# (STREAMSINK_ATTN_CHUNK=256) and 11 (192) with and without clusters,
# against the default 16 splits and attn_combine; two alternating runs.
set -u
B=.device/bin-s19d/streamsink_gpu
for rep in 1 2; do
  for v in "" "STREAMSINK_ATTN_CHUNK=256" "STREAMSINK_ATTN_CHUNK=256 STREAMSINK_ATTN_CLUSTER=1" "STREAMSINK_ATTN_CHUNK=192" "STREAMSINK_ATTN_CHUNK=192 STREAMSINK_ATTN_CLUSTER=1"; do
    echo "== ${v:-default}"
    env $v timeout 60 $B bench --sections decode --shapes llama2-7b --batches 1 --no-max-batch 2>&1 >/dev/null | grep "^decode\|clusters"
  done
done 2>&1 | tee $OUT/ab-cluster-splits.log
