#!/usr/bin/env bash
# Call 3: how long the device waits for the host per decode step
# (STREAMSINK_STEP_TIMING=1: CUDA events from the descriptor upload to the
# last download, against the wall time of the step), two runs each.
set -u
B=.device/bin-s19c/streamsink_gpu
for rep in 1 2; do
  STREAMSINK_STEP_TIMING=1 timeout 100 $B bench --sections decode --shapes llama2-7b,mistral-7b --batches 1,8,32 --no-max-batch 2>&1 >/dev/null | grep "^decode"
done 2>&1 | tee $OUT/step-timing.log
