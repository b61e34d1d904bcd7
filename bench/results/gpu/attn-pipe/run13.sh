#!/usr/bin/env bash
# ncu of the pipelined tensor-core attention at Mistral-7B 32 and 236 sessions; MB=3 A/B.
set -u
B=.device/bin-perf/streamsink_gpu
O=$OUT
for b in 236 32; do
  STREAMSINK_PROFILE_STEP=1 timeout 200 ncu --profile-from-start off -k regex:attn_decode128_mma --launch-skip 3 --launch-count 1 \
    --set full --import-source no $B bench --sections decode --shapes mistral-7b --batches $b --no-max-batch > $O/ncu-b$b.txt 2>&1
  echo "ncu b$b exit $?"
done
run() { echo "== $1"; env $1 timeout 100 $B bench --sections decode --shapes mistral-7b 2>&1 >/dev/null | grep "^decode"; }
{
for rep in 1 2; do run "STREAMSINK_ATTN_MMA_BLOCKS=2"; run "STREAMSINK_ATTN_MMA_BLOCKS=3"; done
} 2>&1 | tee $O/ab13.log
