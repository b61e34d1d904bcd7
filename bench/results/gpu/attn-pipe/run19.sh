#!/usr/bin/env bash
# A/B: warp-per-(row, head) combine for <= 4 splits (COMBINE_FEW) and the shuffle block_sum (binary _serial has the old one).
set -u
B=.device/bin-perf/streamsink_gpu
S=.device/bin-perf/streamsink_gpu_serial
M=tests/fixtures/models
O=$OUT
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
{
for d in fp32 bf16 fp16; do timeout 60 $B parity $M tests/fixtures/golden --dtype $d; echo "exit $?"; done
timeout 60 $B versus $M/llama-gqa --dtype bf16 --factor 10 --sessions 4; echo "exit $?"
timeout 60 $B versus $M/falcon-mq --dtype bf16 --factor 10; echo "exit $?"
timeout 90 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 --factor 3 --window 128 --first-chunk 100 --sessions 4; echo "exit $?"
timeout 90 $B versus /tmp/w/llama-hd128-g1 --dtype fp16 --factor 3 --window 128 --first-chunk 100 --sessions 6; echo "exit $?"
} > $O/checks-combine.jsonl 2>&1
echo "checks pass $(grep -c '"pass":true' $O/checks-combine.jsonl) fail $(grep -c '"pass":false' $O/checks-combine.jsonl)"; grep "exit [1-9]" $O/checks-combine.jsonl | head -3
run() { echo "== $1 $2"; env $2 timeout 110 $1 bench --sections decode --shapes mistral-7b 2>&1 >/dev/null | grep "^decode"; }
{
for rep in 1 2; do run $B "STREAMSINK_COMBINE_FEW=1"; run $B "STREAMSINK_COMBINE_FEW=0"; run $S "STREAMSINK_COMBINE_FEW=1"; done
} 2>&1 | tee $O/ab19.log
