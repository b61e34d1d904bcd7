#!/usr/bin/env bash
# The in-kernel split merge at more splits now that the attention lets its
# dependent launch from its start (o_proj streams its weights while the
# attention runs), and the tensor-core attention's trigger: every decode
# shape, A/B in one call (ab4.log).
set -u
N=.device/bin-c4/streamsink_gpu
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
{
  timeout 100 $N versus /tmp/w/llama-hd128-g4 --dtype bf16 --factor 3 --window 128 --first-chunk 40 --sessions 4
  timeout 100 $N versus /tmp/w/llama-hd128-g8 --dtype fp16 --factor 3 --window 128 --first-chunk 40 --sessions 3
  STREAMSINK_ATTN_MERGE=64 timeout 100 $N versus /tmp/w/llama-hd128-g4 --dtype bf16 --factor 2 --window 600 --first-chunk 40 --sessions 2
  STREAMSINK_ATTN_MERGE=64 timeout 100 $N versus /tmp/w/llama-hd128-g1 --dtype bf16 --factor 2 --window 600 --first-chunk 40 --sessions 3
} > $OUT/checks4.log 2>&1
echo "checks pass $(grep -c '"pass":true' $OUT/checks4.log) fail $(grep -c '"pass":false' $OUT/checks4.log)"
b() {
  timeout 60 "$@" bench --sections decode --shapes llama2-7b --batches 1,8,32 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  timeout 90 "$@" bench --sections decode --shapes mistral-7b --batches 1,8,32,236 --no-max-batch 2>&1 >/dev/null | grep "^decode"
}
for rep in 1 2; do
  for v in "X=1" "STREAMSINK_ATTN_MERGE=16" "STREAMSINK_ATTN_MERGE=64"; do
    echo "== $v"; env $v bash -c "$(declare -f b); b $N"
  done
done 2>&1 | tee $OUT/ab4.log
echo "== STREAMSINK_ATTN_MERGE=64 STREAMSINK_ATTN_TRIGGER=0"; env STREAMSINK_ATTN_MERGE=64 STREAMSINK_ATTN_TRIGGER=0 bash -c "$(declare -f b); b $N" 2>&1 | tee -a $OUT/ab4.log
