#!/usr/bin/env bash
# A/B of the tensor-core attention's K/V schedule (PIPE) and lane dim order (PERM).
set -u
B=.device/bin-perf/streamsink_gpu
O=$OUT
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
{
for m in llama-hd128-g4 llama-hd128-g8; do for d in bf16 fp16; do
  timeout 90 $B versus /tmp/w/$m --dtype $d --factor 3 --window 128 --first-chunk 100 --sessions 4; echo "exit $?"; done; done
for k in "STREAMSINK_ATTN_PIPE=0" "STREAMSINK_ATTN_PERM=0"; do
  env $k timeout 60 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 --factor 3 --window 128 --first-chunk 100 --sessions 3; echo "$k exit $?"; done
} > $O/versus-pipe.jsonl 2>&1
echo "versus pass $(grep -c '"pass":true' $O/versus-pipe.jsonl) fail $(grep -c '"pass":false' $O/versus-pipe.jsonl)"; grep "exit [1-9]" $O/versus-pipe.jsonl | head
run() { echo "== $1"; env $1 timeout 100 $B bench --sections decode --shapes mistral-7b 2>&1 >/dev/null | grep "^decode"; }
{
for rep in 1 2; do
  run "STREAMSINK_ATTN_PIPE=0 STREAMSINK_ATTN_PERM=0"; run "STREAMSINK_ATTN_PIPE=1 STREAMSINK_ATTN_PERM=1"
  run "STREAMSINK_ATTN_PIPE=1 STREAMSINK_ATTN_PERM=0"; run "STREAMSINK_ATTN_PIPE=0 STREAMSINK_ATTN_PERM=1"
done
} 2>&1 | tee $O/ab12.log
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 --factor 3 --window 100 --first-chunk 40 --sessions 3 > $O/memcheck-pipe.log 2>&1; echo "memcheck exit $?" | tee -a $O/memcheck-pipe.log
