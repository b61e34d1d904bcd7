#!/usr/bin/env bash
# Call 1 of this stop:
#  1. main's build (3a84c55 + the `download` ablation): parity (merged_warps
#     refactor has not run on a GPU yet) and the logits download's cost in
#     the step, Llama-2-7B batch 1 and Mistral-7B 236 (ablate-download.log).
#  2. branch wip/cutlass-gemm: cutlass_gemm_check and the engine A/B
#     (cuBLAS vs CUTLASS from 33 rows), ab-cutlass.log.
set -u
O=$OUT
P=.device/bin-s19/streamsink_gpu
C=.device/bin-cutlass
M=tests/fixtures/models
for d in bf16 fp16; do timeout 60 $P parity $M tests/fixtures/golden --dtype $d; done > $O/parity.jsonl 2>&1
echo "parity pass $(grep -c '"pass":true' $O/parity.jsonl) fail $(grep -c '"pass":false' $O/parity.jsonl)"
for rep in 1 2; do
  for a in none download; do
    echo "== STREAMSINK_ABLATE=$a"
    STREAMSINK_ABLATE=$a timeout 60 $P bench --sections decode --shapes llama2-7b --batches 1 --no-max-batch 2>&1 >/dev/null | grep "^decode"
    STREAMSINK_ABLATE=$a timeout 60 $P bench --sections decode --shapes mistral-7b --batches 1,236 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  done
done 2>&1 | tee $O/ablate-download.log
timeout 150 $C/cutlass_gemm_check 2>&1 | tee $O/cutlass-gemm-check.log | tail -40
for rep in 1 2; do
  for c in 0 33; do
    echo "== STREAMSINK_GEMM_CUTLASS=$c"
    STREAMSINK_GEMM_CUTLASS=$c timeout 60 $C/streamsink_gpu bench --sections decode --shapes mistral-7b --batches 64,236 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  done
done 2>&1 | tee $O/ab-cutlass.log
