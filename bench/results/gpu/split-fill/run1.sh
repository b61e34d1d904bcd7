#!/usr/bin/env bash
# Mistral-7B at 236 sessions: how many attention splits (STREAMSINK_ATTN_FILL,
# the last wave's fill the split chooser asks for: 95 -> 2 splits, 97 -> 3,
# 98 -> 4, 99 -> 5) and 3 attention blocks per SM, alternating in one call
# (ab1.log). Then rows-norm-v2 (bin-rn2: the folded norms in gemm_rows with
# the epilogue loads hoisted, STREAMSINK_ROWS_NORM=0|1) against main at 32
# sessions (ab2.log), with its kernel check and one engine check.
set -u
O=$OUT
B=.device/bin-perf/streamsink_gpu
R=.device/bin-rn2/streamsink_gpu
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for rep in 1 2; do
  for v in 95 97 98 99 mma3:95 mma3:99; do
    f=${v##*:}; mb=2; [[ $v == mma3:* ]] && mb=3
    echo "== fill $f blocks $mb"
    STREAMSINK_ATTN_MMA_BLOCKS=$mb STREAMSINK_ATTN_FILL=$f timeout 60 $B bench --sections decode --shapes mistral-7b --batches 236 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  done
done 2>&1 | tee $O/ab1.log
timeout 60 .device/bin-rn2/gemm_rows_check > $O/gemm-rows-check.log 2>&1; echo "gemm_rows_check exit $?" | tee -a $O/gemm-rows-check.log
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
STREAMSINK_ROWS_NORM=1 timeout 100 $R versus /tmp/w/llama-hd128-g4 --dtype bf16 --factor 3 --window 128 --first-chunk 40 --sessions 24 > $O/checks-rn2.jsonl 2>&1; echo "rn2 versus exit $?"
for rep in 1 2; do
  for v in perf:0 rn2:0 rn2:1; do
    b=${v%%:*}; g=${v##*:}
    echo "== $b STREAMSINK_ROWS_NORM=$g"
    for s in mistral-7b llama2-7b; do
      STREAMSINK_ROWS_NORM=$g timeout 60 .device/bin-$b/streamsink_gpu bench --sections decode --shapes $s --batches 32 --no-max-batch 2>&1 >/dev/null | grep "^decode"
    done
  done
done 2>&1 | tee $O/ab2.log
