#!/usr/bin/env bash
# After review (host buffers allocated before the step is launched; a NaN
# row's next token kept in range): parity, next, snapshot, versus on one
# model, and the decode bench at Llama-2-7B 1 and Mistral-7B 236.
set -u
B=.device/bin-final3/streamsink_gpu
M=tests/fixtures/models
{
  for d in fp32 bf16 fp16; do $B parity $M tests/fixtures/golden --dtype $d; done
  for m in llama-gqa pythia falcon-mq falcon-nda mpt; do for d in fp32 bf16; do $B next $M/$m --dtype $d; done; done
  for d in fp32 bf16; do $B snapshot $M/llama-gqa --dtype $d; done
  for d in fp32 bf16; do $B versus $M/llama-gqa --dtype $d --factor 10; done
} > $OUT/checks.log 2>&1
echo "checks pass $(grep -c '"pass":true' $OUT/checks.log) fail $(grep -c '"pass":false' $OUT/checks.log)"
timeout 60 $B bench --sections decode --shapes llama2-7b --batches 1 --no-max-batch 2>&1 >/dev/null | grep "^decode" | tee $OUT/bench.log
timeout 60 $B bench --sections decode --shapes mistral-7b --batches 236 --no-max-batch 2>&1 >/dev/null | grep "^decode" | tee -a $OUT/bench.log
