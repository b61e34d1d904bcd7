#!/usr/bin/env bash
# Where gemm_rows (shared-memory stages) waits at 32 sessions: stall reasons
# per issued instruction for layer 0's four launches, and the SASS lines with
# the most stall samples.
set -u
O=$OUT
B=.device/bin-perf/streamsink_gpu
STREAMSINK_PROFILE_STEP=1 timeout 300 ncu --profile-from-start off -k regex:gemm_rows --launch-count 4 \
  --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio,smsp__inst_executed.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,gpu__time_duration.sum,lts__t_sectors_srcunit_tex_op_read_lookup_hit.sum,lts__t_sectors_srcunit_tex_op_read.sum,dram__sectors_read.sum \
  --section SourceCounters --import-source no -o /tmp/r26 \
  $B bench --sections decode --shapes mistral-7b --batches 32 --no-max-batch > /dev/null 2>&1
echo "ncu exit $?"
ncu --import /tmp/r26.ncu-rep --csv --page raw > /tmp/raw.csv 2>&1
python3 - <<'PY' | tee $O/stalls26.log
import csv
rows=list(csv.reader(open('/tmp/raw.csv')))
hdr=rows[0]
for r in rows[2:]:
    d=dict(zip(hdr,r))
    print(d.get("Kernel Name","")[:40], "grid", d.get("Grid Size"), "us", d.get("gpu__time_duration.sum"), "dram%", d.get("dram__throughput.avg.pct_of_peak_sustained_elapsed"), "inst", d.get("smsp__inst_executed.sum"), "dram sectors", d.get("dram__sectors_read.sum"))
    st=[(float(v.replace(',','')),k.replace("smsp__average_warps_issue_stalled_","").replace("_per_issue_active.ratio","")) for k,v in d.items() if k.startswith("smsp__average_warps_issue_stalled_") and v not in ("","n/a")]
    st.sort(reverse=True)
    print("   ", ", ".join(f"{k} {v:.2f}" for v,k in st[:8]))
PY
ncu --import /tmp/r26.ncu-rep --page source --csv --print-source sass --launch-skip 3 --launch-count 1 > /tmp/src.csv 2>&1
echo "source page exit $? lines $(wc -l < /tmp/src.csv)"
head -3 /tmp/src.csv | cut -c1-600 > $O/src26-head.txt
python3 - <<'PY' | tee -a $O/stalls26.log
import csv
rows=list(csv.reader(open('/tmp/src.csv')))
hdr=None
for i,r in enumerate(rows):
    if any("Source" == c for c in r): hdr=r; start=i+1; break
if not hdr:
    print("no header"); raise SystemExit
print(hdr[:12])
si=hdr.index("Source")
cand=[j for j,c in enumerate(hdr) if "Sampling" in c and "All" in c] or [j for j,c in enumerate(hdr) if "Sampl" in c]
j=cand[0]
data=[]
for r in rows[start:]:
    try: data.append((float(r[j].replace(',','') or 0), r[si]))
    except: pass
tot=sum(v for v,_ in data) or 1
data.sort(reverse=True)
for v,s in data[:25]: print(f"{100*v/tot:5.1f}%  {s}")
PY
