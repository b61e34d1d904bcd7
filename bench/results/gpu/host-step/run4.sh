#!/usr/bin/env bash
# Call 4: the split merge of the scalar head_dim-128 attention in
# thread-block clusters (STREAMSINK_ATTN_CLUSTER=1, gpu::cluster_merge).
#  1. checks with it on: head_dim-128 one- and two-query models, long
#     windows (up to 16 splits, one cluster per row and KV head) and short
#     ones with staggered sessions (splits with no entries), memcheck.
#  2. Llama-2-7B 1 and 8 sessions, Mistral-7B 1 (not affected: tensor-core
#     kernel), off against on, three alternating runs (ab-cluster.log).
set -u
O=$OUT
B=.device/bin-s19d/streamsink_gpu
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
{
  for d in bf16 fp16; do
    STREAMSINK_ATTN_CLUSTER=1 timeout 60 $B versus /tmp/w/llama-hd128-g1 --dtype $d --factor 2 --window 2044 --first-chunk 100
    STREAMSINK_ATTN_CLUSTER=1 timeout 60 $B versus /tmp/w/llama-hd128-g1 --dtype $d --factor 2 --window 1000 --first-chunk 100 --sessions 4
  done
  STREAMSINK_ATTN_CLUSTER=1 timeout 60 $B versus /tmp/w/llama-hd128-g2 --dtype bf16 --factor 3 --window 300 --first-chunk 40 --sessions 6
  STREAMSINK_ATTN_CLUSTER=1 timeout 60 $B versus /tmp/w/llama-hd128-g1 --dtype fp32 --factor 3 --window 300 --first-chunk 40 --sessions 6
  STREAMSINK_ATTN_CLUSTER=1 compute-sanitizer --tool memcheck --error-exitcode 9 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 --factor 2 --window 600 --first-chunk 40 --sessions 3 > $O/memcheck-cluster.log 2>&1
  echo "memcheck exit $?"; tail -2 $O/memcheck-cluster.log
} 2>&1 | tee $O/checks-cluster.log | cut -c1-300
echo "checks: pass $(grep -c '"pass":true' $O/checks-cluster.log) fail $(grep -c '"pass":false' $O/checks-cluster.log)"
for rep in 1 2 3; do
  for c in 0 1; do
    echo "== STREAMSINK_ATTN_CLUSTER=$c"
    STREAMSINK_ATTN_CLUSTER=$c timeout 60 $B bench --sections decode --shapes llama2-7b --batches 1,8 --no-max-batch 2>&1 >/dev/null | grep "^decode"
    STREAMSINK_ATTN_CLUSTER=$c timeout 60 $B bench --sections decode --shapes mistral-7b --batches 1 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  done
done 2>&1 | tee $O/ab-cluster.log
