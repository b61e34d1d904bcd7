#!/usr/bin/env bash
# After the final review (row_stats shared by next_top and logsoftmax_rows;
# PinnedBuffer; cluster_attr): parity, next, snapshot, versus on one
# model, and the decode bench at Llama-2-7B 1 and Mistral-7B 236.
set -u
B=.device/bin-review/streamsink_gpu
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
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
STREAMSINK_ATTN_CLUSTER=1 timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 --factor 2 --window 300 --first-chunk 40 --sessions 6 > $OUT/memcheck-versus.log 2>&1
echo "memcheck versus exit $? pass $(grep -c '"pass":true' $OUT/memcheck-versus.log)"; grep clusters $OUT/memcheck-versus.log | head -2; tail -1 $OUT/memcheck-versus.log
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $B next $M/llama-gqa --dtype fp32 > $OUT/memcheck-next.log 2>&1
echo "memcheck next exit $?"; tail -1 $OUT/memcheck-next.log
