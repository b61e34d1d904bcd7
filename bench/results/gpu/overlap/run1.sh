#!/usr/bin/env bash
# Llama-2-7B batch 1: the scalar attention's first batch of cached entries
# read before griddepcontrol.wait and its dependent launched from its start,
# next_top on up to 32 blocks per sequence (programmatic dependent of the LM
# head, raw logits kept with their log-sum-exp), the final norm folded into
# the LM head. Checks of the new build, then A/B against the last build
# (base) alternating in one call, then each part off alone.
set -u
N=.device/bin-new/streamsink_gpu
A=.device/bin-base/streamsink_gpu
M=tests/fixtures/models
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
{
  for d in fp32 bf16 fp16; do $N parity $M tests/fixtures/golden --dtype $d; done
  for m in llama-gqa pythia falcon-mq falcon-nda mpt; do for d in fp32 bf16; do $N next $M/$m --dtype $d; done; done
  for d in fp32 bf16; do $N snapshot $M/llama-gqa --dtype $d; done
  for d in fp32 bf16; do $N versus $M/llama-gqa --dtype $d --factor 10; done
  for d in fp32 bf16; do timeout 100 $N versus /tmp/w/llama-hd128-g1 --dtype $d --factor 3 --window 128 --first-chunk 40 --sessions 4; done
  timeout 100 $N versus /tmp/w/llama-hd128-g2 --dtype bf16 --factor 3 --window 128 --first-chunk 40 --sessions 3
} > $OUT/checks.log 2>&1
echo "checks pass $(grep -c '"pass":true' $OUT/checks.log) fail $(grep -c '"pass":false' $OUT/checks.log)"
grep '"pass":false' $OUT/checks.log | head -3; grep -i "error\|abort" $OUT/checks.log | head -3
b() { timeout 60 "$@" bench --sections decode --shapes llama2-7b --batches 1 --no-max-batch 2>&1 >/dev/null | grep "^decode"; }
for rep in 1 2 3; do
  echo "== base"; b $A
  echo "== new"; b $N
done 2>&1 | tee $OUT/ab1.log
for v in STREAMSINK_ATTN_PREFETCH=0 STREAMSINK_ATTN_TRIGGER=0 STREAMSINK_NEXT_PARTS=1 STREAMSINK_LM_FOLD=0 X=1; do
  echo "== new $v"; env $v bash -c "$(declare -f b); b $N"
done 2>&1 | tee $OUT/parts1.log
timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 $N next $M/llama-gqa --dtype fp32 > $OUT/memcheck-next.log 2>&1
echo "memcheck next exit $?"; tail -1 $OUT/memcheck-next.log
timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 $N versus /tmp/w/llama-hd128-g1 --dtype bf16 --factor 2 --window 128 --first-chunk 40 --sessions 3 > $OUT/memcheck-versus.log 2>&1
echo "memcheck versus exit $?"; tail -1 $OUT/memcheck-versus.log
