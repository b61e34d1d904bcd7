#!/usr/bin/env bash
# Per-kernel times of one Mistral-7B decode step at 32 and 236 sessions (ncu), and whether nsys exists.
set -u
B=.device/bin-perf/streamsink_gpu
O=$OUT
which nsys ncu; ls /usr/local/cuda/bin 2>/dev/null | head -40
for b in 32 236; do
  STREAMSINK_PROFILE_STEP=1 timeout 250 ncu --profile-from-start off --csv --print-units base \
    --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,launch__block_size \
    $B bench --sections decode --shapes mistral-7b --batches $b --no-max-batch > $O/step-b$b.csv 2>/dev/null
  echo "ncu b$b exit $?"
  python3 tools/cuda/ncu_breakdown.py $O/step-b$b.csv | head -30
done
