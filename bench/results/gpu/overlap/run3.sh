#!/usr/bin/env bash
# The committed build (faaefb3): checks, then Llama-2-7B batch 1 with the
# split merge in the attention kernel at 16 splits (no attn_combine: o_proj
# is the attention's dependent) and the small kernels' early trigger, A/B in
# one call (ab3.log).
set -u
N=.device/bin-c3/streamsink_gpu
M=tests/fixtures/models
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
{
  for d in fp32 bf16 fp16; do $N parity $M tests/fixtures/golden --dtype $d; done
  for m in llama-gqa pythia falcon-mq falcon-nda mpt; do for d in fp32 bf16; do $N next $M/$m --dtype $d; done; done
  for d in fp32 bf16; do $N snapshot $M/llama-gqa --dtype $d; done
  for d in fp32 bf16; do timeout 100 $N versus /tmp/w/llama-hd128-g1 --dtype $d --factor 3 --window 128 --first-chunk 40 --sessions 4; done
  STREAMSINK_ATTN_MERGE=16 timeout 100 $N versus /tmp/w/llama-hd128-g1 --dtype bf16 --factor 3 --window 600 --first-chunk 40 --sessions 2
} > $OUT/checks3.log 2>&1
echo "checks pass $(grep -c '"pass":true' $OUT/checks3.log) fail $(grep -c '"pass":false' $OUT/checks3.log)"
b() { timeout 60 "$@" bench --sections decode --shapes llama2-7b --batches 1 --no-max-batch 2>&1 >/dev/null | grep "^decode"; }
for rep in 1 2 3; do
  for v in "X=1" "STREAMSINK_ATTN_MERGE=16" "STREAMSINK_PDL_LATE=0" "STREAMSINK_ATTN_MERGE=16 STREAMSINK_PDL_LATE=0"; do
    echo "== $v"; env $v bash -c "$(declare -f b); b $N"
  done
done 2>&1 | tee $OUT/ab3.log
