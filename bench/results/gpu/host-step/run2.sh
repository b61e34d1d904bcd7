#!/usr/bin/env bash
# Call 2: the next token chosen on the GPU (StepEntry::next_distribution).
#  1. checks: parity, `next` on the fixture models, snapshot, versus (one
#     model per dtype), the engine at 16 sessions (gemm_rows path) and
#     memcheck over `next`.
#  2. decode bench: greedy steps (next token only) and steps with the logits
#     to the host, Llama-2-7B 1/8/32 and Mistral-7B 1/8/32/236 (bench.log).
set -u
O=$OUT
B=.device/bin-s19b/streamsink_gpu
M=tests/fixtures/models
{
  for d in fp32 bf16 fp16; do timeout 60 $B parity $M tests/fixtures/golden --dtype $d; done > $O/parity.jsonl 2>&1
  echo "parity pass $(grep -c '"pass":true' $O/parity.jsonl) fail $(grep -c '"pass":false' $O/parity.jsonl)"
  for m in llama-gqa pythia falcon-mq falcon-nda mpt; do
    for d in fp32 bf16 fp16; do timeout 60 $B next $M/$m --dtype $d; echo "exit $? $m $d"; done
  done
  for d in fp32 bf16; do timeout 60 $B snapshot $M/llama-gqa --dtype $d; done
  for d in fp32 bf16; do timeout 60 $B versus $M/llama-gqa --dtype $d --factor 10; done
  python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
  timeout 100 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 --factor 3 --window 128 --first-chunk 40 --sessions 16
  timeout 100 $B next /tmp/w/llama-hd128-g4 --dtype bf16; echo "exit $? wide-g4"
  compute-sanitizer --tool memcheck --error-exitcode 9 $B next $M/llama-gqa --dtype bf16 > $O/memcheck-next.log 2>&1
  echo "memcheck exit $?"; tail -2 $O/memcheck-next.log
} 2>&1 | tee $O/checks.log | grep -v '"pass":true'
echo "checks: pass $(grep -c '"pass":true' $O/checks.log) fail $(grep -c '"pass":false' $O/checks.log)"
timeout 150 $B bench --sections decode --shapes llama2-7b,mistral-7b --batches 1,8,32 --out $O/bench.json 2>&1 | grep -v "^\s*$" | tee $O/bench.log
