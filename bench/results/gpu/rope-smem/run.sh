#!/usr/bin/env bash
# wip/mma-rope: correctness with the RoPE-in-shared-memory knob, then Mistral decode with it off and on.
cd "$(dirname "$0")/../.."
B=$PWD/.device/bin-wip/streamsink_gpu
W=/tmp/streamsink-wide
nvidia-smi --query-gpu=name --format=csv,noheader
python3 tools/cuda/make_wide_models.py $W >/dev/null
V="--factor 10 --window 128 --first-chunk 100"
export STREAMSINK_ATTN_MMA_ROPE_SMEM=1
{
timeout 60 $B versus $W/llama-hd128-g4 --dtype bf16 $V --sessions 2
timeout 60 $B versus $W/llama-hd128-g8 --dtype fp16 $V --sessions 2
} > $OUT/versus-rope-smem.jsonl 2>&1
echo "versus: pass $(grep -c '"pass":true' $OUT/versus-rope-smem.jsonl) fail $(grep -c '"pass":false' $OUT/versus-rope-smem.jsonl)"
for k in 0 1 0 1; do
  STREAMSINK_ATTN_MMA_ROPE_SMEM=$k timeout 110 $B bench --sections decode --shapes mistral-7b --out $OUT/bench-rope$k-$RANDOM.json 2>&1 | grep -i -E "sessions|roofline|ms" | cut -c1-200 | sed "s/^/[rope_smem=$k] /"
done
