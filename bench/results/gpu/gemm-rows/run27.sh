#!/usr/bin/env bash
# gemm_rows as X as the A operand in fragment order (MT tiles of 16 rows): checks at 12-64 sessions and a 40-token
# first chunk, memcheck, Mistral-7B A/B against cuBLAS at 16/32/64 sessions, and
# per-launch ncu times at 32 sessions.
set -u
B=.device/bin-perf/streamsink_gpu
M=tests/fixtures/models
O=$OUT
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
V="--factor 3 --window 128 --first-chunk 40"
for i in 1 2; do
  for g in 0 64; do
    echo "== STREAMSINK_GEMM_ROWS=$g"
    STREAMSINK_GEMM_ROWS=$g timeout 100 $B bench --sections decode --shapes mistral-7b --batches 16,24,32,64 --no-max-batch 2>&1 >/dev/null | grep "^decode"
  done
done 2>&1 | tee $O/ab27.log
STREAMSINK_PROFILE_STEP=1 timeout 200 ncu --profile-from-start off --csv --print-units base \
  --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,sm__cycles_active.avg,gpc__cycles_elapsed.max \
  $B bench --sections decode --shapes mistral-7b --batches 32 --no-max-batch > /tmp/s.csv 2>/dev/null
python3 - <<'PY' | tee $O/ncu27.log
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
        if n>=8: break
PY
{
for d in bf16 fp16; do timeout 60 $B parity $M tests/fixtures/golden --dtype $d; echo "exit $?"; done
timeout 120 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 $V --sessions 16; echo "exit $?"
timeout 120 $B versus /tmp/w/llama-hd128-g4 --dtype fp16 $V --sessions 40; echo "exit $?"
timeout 150 $B versus /tmp/w/llama-hd128-g1 --dtype bf16 $V --sessions 64; echo "exit $?"
timeout 120 $B versus /tmp/w/llama-hd128-g8 --dtype bf16 $V --sessions 24; echo "exit $?"
STREAMSINK_GEMM_ROWS_BLOCKS=5 timeout 120 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 $V --sessions 16; echo "exit $? (5 blocks)"
STREAMSINK_GEMM_ROWS_BLOCKS=3 timeout 120 $B versus /tmp/w/llama-hd128-g2 --dtype fp16 $V --sessions 12; echo "exit $? (3 blocks)"
} > $O/checks.jsonl 2>&1
echo "checks pass $(grep -c '"pass":true' $O/checks.jsonl) fail $(grep -c '"pass":false' $O/checks.jsonl)"; grep "exit [1-9]" $O/checks.jsonl | head -3
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 $B versus /tmp/w/llama-hd128-g4 --dtype bf16 --factor 2 --window 128 \
  --first-chunk 40 --sessions 16 > $O/memcheck.log 2>&1; echo "memcheck exit $?" | tee -a $O/memcheck.log; tail -2 $O/memcheck.log
