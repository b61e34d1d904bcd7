#!/usr/bin/env bash
# Per-kernel times of one Mistral-7B decode step at 32 and 64 sessions with
# cuBLAS and with gemm_rows (ncu), and ncu's full sections for layer 0's four
# gemm_rows launches at 32 sessions.
set -u
B=.device/bin-perf/streamsink_gpu
O=$OUT
for b in 32 64; do
  for g in 0 64; do
    STREAMSINK_GEMM_ROWS=$g STREAMSINK_PROFILE_STEP=1 timeout 200 ncu --profile-from-start off --csv --print-units base \
      --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size \
      $B bench --sections decode --shapes mistral-7b --batches $b --no-max-batch > /tmp/s.csv 2>/dev/null
    echo "== b$b GEMM_ROWS=$g (exit $?)"
    python3 tools/cuda/ncu_breakdown.py /tmp/s.csv | head -12
    python3 - <<'PY'
import csv
lines=[l for l in open('/tmp/s.csv') if l.startswith('"')]
by={}
for r in csv.DictReader(lines):
    by.setdefault(int(r["ID"]),{"name":r["Kernel Name"][:60]})[r["Metric Name"]]=r["Metric Value"]
n=0
for i in sorted(by):
    k=by[i]
    if "gemm_rows" in k["name"] or "nvjet" in k["name"] or "splitK" in k["name"]:
        print(f'  {k["name"]:<60} {float(k["gpu__time_duration.sum"])/1e3:8.1f} us grid {k["launch__grid_size"]:>6} dram {float(k["dram__throughput.avg.pct_of_peak_sustained_elapsed"]):5.1f}%')
        n+=1
        if n>=6: break
PY
  done
done 2>&1 | tee $O/ncu23.log
STREAMSINK_PROFILE_STEP=1 timeout 200 ncu --profile-from-start off -k regex:gemm_rows --launch-count 4 \
  --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis --section SchedulerStats \
  --section LaunchStats $B bench --sections decode --shapes mistral-7b --batches 32 --no-max-batch > $O/ncu23-sections.txt 2>&1
echo "sections exit $?"
