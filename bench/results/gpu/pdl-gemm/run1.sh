#!/usr/bin/env bash
# cuBLAS GEMMs as programmatic dependents (STREAMSINK_PDL_GEMM): first
# whether cuBLAS's sm90 GEMM kernels wait for their predecessor
# (griddepcontrol.wait = SASS ACQBULK) and trigger their dependents
# (PREEXIT), from ncu's SASS of the kernels of one Mistral-7B step at 32 and
# 236 sessions; the captured graph's edges; checks with it on; then an A/B.
# Outcome: the nvjet GEMM kernels have no ACQBULK (only cuBLAS's split-K
# reduce does), and with the knob 8 of 20 batched checks failed
# (checks-pdl-gemm-wrong.jsonl): a race. The knob (an edge set through
# cudaStreamUpdateCaptureDependencies before cublasGemmEx) was removed; the
# A/B never ran (the call's 10 minutes went to ncu at 236 sessions).
set -u
B=.device/bin-perf/streamsink_gpu
O=$OUT
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $O/gpu.txt
# e8cfd91's gemm_rows (compiled, never run): its own check first.
timeout 60 .device/bin-perf/gemm_rows_check > $O/gemm-rows-check.log 2>&1; echo "gemm_rows_check exit $?" | tee -a $O/gemm-rows-check.log
for b in 32 236; do
  STREAMSINK_PROFILE_STEP=1 timeout 150 ncu --profile-from-start off -k regex:'nvjet|splitK|Kernel|cublas|gemm' --launch-count 8 \
    --section SourceCounters --import-source no -o /tmp/s$b \
    $B bench --sections decode --shapes mistral-7b --batches $b --no-max-batch > /dev/null 2>&1
  echo "ncu $b exit $?"
  ncu --import /tmp/s$b.ncu-rep --page source --csv --print-source sass > /tmp/src$b.csv 2>&1
  python3 - $b /tmp/src$b.csv <<'PY'
import csv,sys,re
b=sys.argv[1]; txt=open(sys.argv[2]).read()
# one kernel's table after another; report each kernel's ACQBULK/PREEXIT positions
blocks=re.split(r'\n(?=.*Kernel Name|"Address")',txt)
print("batch",b,"lines",txt.count("\n"),"ACQBULK",txt.count("ACQBULK"),"PREEXIT",txt.count("PREEXIT"))
lines=txt.split("\n")
idx=0
for i,l in enumerate(lines):
    if "ACQBULK" in l or "PREEXIT" in l or "nvjet" in l or "Kernel" in l[:80]:
        print(i, l[:160]); idx+=1
        if idx>60: break
PY
done 2>&1 | tee $O/sass.log
STREAMSINK_PDL_GEMM=1 STREAMSINK_GRAPH_DOT=/tmp/g32.dot timeout 60 $B bench --sections decode --shapes mistral-7b --batches 32 --no-max-batch > /dev/null 2>&1
grep -c "" /tmp/g32.dot; grep -i -m12 "programmatic\|nvjet" /tmp/g32.dot | cut -c1-300 > $O/dot-head.txt
python3 tools/cuda/make_wide_models.py /tmp/w >/dev/null
V="--factor 3 --window 128 --first-chunk 40"
{
for s in 24 40; do for d in bf16 fp16; do
STREAMSINK_PDL_GEMM=1 STREAMSINK_GEMM_ROWS=0 timeout 100 $B versus /tmp/w/llama-hd128-g4 --dtype $d $V --sessions $s; echo "exit $?"
done; done
} > $O/checks.jsonl 2>&1
echo "checks pass $(grep -c '"pass":true' $O/checks.jsonl) fail $(grep -c '"pass":false' $O/checks.jsonl)"
for g in 0 1 0 1; do
  echo "== STREAMSINK_PDL_GEMM=$g"
  STREAMSINK_PDL_GEMM=$g timeout 110 $B bench --sections decode --shapes mistral-7b --batches 236,32 --no-max-batch 2>&1 >/dev/null | grep "^decode"
done 2>&1 | tee $O/ab1.log
