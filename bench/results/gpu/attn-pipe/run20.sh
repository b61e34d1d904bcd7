#!/usr/bin/env bash
# Splits of the decode attention at 236 Mistral sessions: the chooser's 2 against 1 (STREAMSINK_ATTN_CHUNK=2048).
set -u
B=.device/bin-perf/streamsink_gpu
run() { echo "== $1"; env $1 timeout 110 $B bench --sections decode --shapes mistral-7b --batches 236,32 --no-max-batch 2>&1 >/dev/null | grep "^decode"; }
{
for rep in 1 2; do run "STREAMSINK_ATTN_CHUNK=0"; run "STREAMSINK_ATTN_CHUNK=2048"; done
} 2>&1 | tee $OUT/ab20.log
