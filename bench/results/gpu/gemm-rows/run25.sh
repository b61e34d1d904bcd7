#!/usr/bin/env bash
# gemm_rows with X read through L1 by each warp (no shared memory stages, no
# barriers; .device/bin-l1) against the shared-memory stages (.device/bin-perf)
# and cuBLAS: Mistral-7B at 16/32 sessions, alternating; ncu per launch at 32.
set -u
O=$OUT
for i in 1 2; do
  for v in cublas smem l1; do
    B=.device/bin-perf/streamsink_gpu; g=64
    [[ $v == cublas ]] && g=0
    [[ $v == l1 ]] && B=.device/bin-l1/streamsink_gpu
    echo "== $v"
    STREAMSINK_GEMM_ROWS=$g timeout 100 $B bench --sections decode --shapes mistral-7b --batches 16,32 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  done
done 2>&1 | tee $O/ab25.log
STREAMSINK_PROFILE_STEP=1 timeout 200 ncu --profile-from-start off --csv --print-units base \
  --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,sm__cycles_active.avg,gpc__cycles_elapsed.max \
  .device/bin-l1/streamsink_gpu bench --sections decode --shapes mistral-7b --batches 32 --no-max-batch > /tmp/s.csv 2>/dev/null
python3 - <<'PY' | tee $O/ncu25.log
import csv
lines=[l for l in open('/tmp/s.csv') if l.startswith('"')]
by={}
for r in csv.DictReader(lines):
    by.setdefault(int(r["ID"]),{"name":r["Kernel Name"][:40]})[r["Metric Name"]]=float(r["Metric Value"].replace(",",""))
n=0
for i in sorted(by):
    k=by[i]
    if "gemm_rows" in k["name"]:
        print(f'{k["name"]:<40} {k["gpu__time_duration.sum"]/1e3:8.1f} us grid {int(k["launch__grid_size"]):>5} dram {k["dram__throughput.avg.pct_of_peak_sustained_elapsed"]:5.1f}% sm-active {k["sm__cycles_active.avg"]/k["gpc__cycles_elapsed.max"]*100:5.1f}%')
        n+=1
        if n>=4: break
PY
