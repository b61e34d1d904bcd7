#!/usr/bin/env bash
# A/B of whole-tile addressing (FAST) and keys rotated in bf16/fp16 pairs (ROPE2) in the tensor-core attention.
set -u
B=.device/bin-perf/streamsink_gpu
O=$OUT
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
{
for m in llama-hd128-g4 llama-hd128-g8; do for d in bf16 fp16; do
  timeout 90 $B versus /tmp/w/$m --dtype $d --factor 3 --window 128 --first-chunk 100 --sessions 4; echo "exit $?"; done; done
for k in "STREAMSINK_ATTN_FAST=0" "STREAMSINK_ATTN_ROPE2=0"; do for d in bf16 fp16; do
  env $k timeout 60 $B versus /tmp/w/llama-hd128-g4 --dtype $d --factor 3 --window 128 --first-chunk 100 --sessions 3; echo "$k exit $?"; done; done
} > $O/versus-fast.jsonl 2>&1
echo "versus pass $(grep -c '"pass":true' $O/versus-fast.jsonl) fail $(grep -c '"pass":false' $O/versus-fast.jsonl)"; grep "exit [1-9]" $O/versus-fast.jsonl | head
run() { echo "== $1"; env $1 timeout 100 $B bench --sections decode --shapes mistral-7b 2>&1 >/dev/null | grep "^decode"; }
{
for rep in 1 2; do
  run "STREAMSINK_ATTN_FAST=1"; run "STREAMSINK_ATTN_FAST=0"; run "STREAMSINK_ATTN_ROPE2=0"
done
} 2>&1 | tee $O/ab15.log
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 --factor 3 --window 100 --first-chunk 40 --sessions 3 > $O/memcheck-fast.log 2>&1; echo "memcheck exit $?" | tee -a $O/memcheck-fast.log
