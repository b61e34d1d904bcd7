#!/usr/bin/env bash
# Second build: the attention's pre-wait loads in the original loop
# (PREFETCH=1: first batch in registers; 2: the warp's other batches also
# requested into L2), trigger on/off; Llama-2-7B batch 1 A/B against the
# last build in one call (ab2.log), batches 8 and 32 (ab2-batched.log).
set -u
N=.device/bin-new2/streamsink_gpu
A=.device/bin-base/streamsink_gpu
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
{
  for pf in 1 2; do for d in fp32 bf16; do
    STREAMSINK_ATTN_PREFETCH=$pf timeout 100 $N versus /tmp/w/llama-hd128-g1 --dtype $d --factor 3 --window 128 --first-chunk 40 --sessions 4
  done; done
  STREAMSINK_ATTN_PREFETCH=2 timeout 100 $N versus /tmp/w/llama-hd128-g2 --dtype bf16 --factor 3 --window 128 --first-chunk 40 --sessions 3
  STREAMSINK_ATTN_PREFETCH=2 timeout 100 $N next tests/fixtures/models/llama-gqa --dtype bf16
} > $OUT/checks2.log 2>&1
echo "checks pass $(grep -c '"pass":true' $OUT/checks2.log) fail $(grep -c '"pass":false' $OUT/checks2.log)"
b() { timeout 60 "$@" bench --sections decode --shapes llama2-7b --batches ${BATCHES:-1} --no-max-batch 2>&1 >/dev/null | grep "^decode"; }
for rep in 1 2 3; do
  echo "== base"; b $A
  for v in "X=1" "STREAMSINK_ATTN_PREFETCH=2" "STREAMSINK_ATTN_TRIGGER=0" "STREAMSINK_ATTN_PREFETCH=2 STREAMSINK_ATTN_TRIGGER=0"; do
    echo "== new $v"; env $v bash -c "$(declare -f b); b $N"
  done
done 2>&1 | tee $OUT/ab2.log
for rep in 1 2; do
  echo "== base"; BATCHES=8,32 b $A
  for v in "X=1" "STREAMSINK_ATTN_PREFETCH=2"; do
    echo "== new $v"; env BATCHES=8,32 $v bash -c "$(declare -f b); b $N"
  done
done 2>&1 | tee $OUT/ab2-batched.log
