#!/usr/bin/env bash
# Where a Mistral-7B decode step's time goes at 32 and 236 sessions: kernels left out of every layer (STREAMSINK_ABLATE).
set -u
B=.device/bin-perf/streamsink_gpu
O=$OUT
run() { echo "== ABLATE=$1 $2"; STREAMSINK_ABLATE=$1 timeout 120 $B bench --sections decode --shapes mistral-7b --batches $2 --no-max-batch 2>&1 >/dev/null | grep "^decode"; }
{
for a in none attention norm combine qkv oproj gateup down attention,combine; do run $a 32; done
for a in none attention norm combine; do run $a 236; done
run none 32
} 2>&1 | tee $O/ablate16.log
