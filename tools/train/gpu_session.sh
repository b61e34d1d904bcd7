#!/usr/bin/env bash
# Train the vanilla and the sink-token model side by side on one GPU host.
#
#   tools/train/gpu_session.sh WAIT_SECONDS
#
# Starts (or, when already running from an earlier command on the same host,
# leaves running) one background training process per model in .trainruns/,
# each detached with setsid so it outlives this command; then waits up to
# WAIT_SECONDS, printing progress, and packs each model's latest export, best
# (lowest held-out loss) export and log into $OUT (or .trainruns/out) as tar
# files. Run it again to keep waiting; the processes stop by themselves when
# their training-time budget (TOTAL seconds, default 1380) is spent.
#
# If $RUNS/NAME has no checkpoint but $RESUME/NAME holds an export
# (a machine was lost between commands), training restarts from those weights
# with a fresh optimizer state.
set -u
WAIT=${1:-570}
TOTAL=${TOTAL:-1380}
RUNS=${RUNS:-.trainruns}
RESUME=${RESUME:-.trainresume}
OUTDIR=${OUT:-$RUNS/out}
mkdir -p "$RUNS" "$OUTDIR"
export PYTHONUNBUFFERED=1
COMMON="--data ${DATA:-.traindata} --total-seconds $TOTAL --time-limit 3000 --eval-every ${EVAL_EVERY:-1000} ${EXTRA:-}"

start() {
  local name=$1 extra=$2
  mkdir -p "$RUNS/$name"
  [ -f "$RUNS/$name/done" ] && return
  if [ -f "$RUNS/$name/pid" ] && kill -0 "$(cat "$RUNS/$name/pid")" 2>/dev/null; then
    echo "$name: still running (pid $(cat "$RUNS/$name/pid"))"
    return
  fi
  local init=""
  [ ! -f "$RUNS/$name/ckpt.pt" ] && [ -d "$RESUME/$name" ] && init="--init-from $RESUME/$name"
  setsid nohup bash -c "python3 tools/train/train.py --run $RUNS/$name $COMMON $extra $init && touch $RUNS/$name/done" \
    >>"$RUNS/$name/stdout" 2>&1 </dev/null &
  echo $! >"$RUNS/$name/pid"
  echo "$name: started (pid $!) $init"
}

nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader
start vanilla ""
start sink "--sink-token"

alive() { kill -0 "$(cat "$RUNS/$1/pid")" 2>/dev/null; }
t0=$(date +%s)
while :; do
  sleep 15
  now=$(( $(date +%s) - t0 ))
  if ! alive vanilla && ! alive sink; then echo "both processes ended at +${now}s"; break; fi
  [ "$now" -ge "$WAIT" ] && break
  if [ $((now % 120)) -lt 15 ]; then
    for n in vanilla sink; do
      echo "[$n +${now}s] $(tail -n 1 "$RUNS/$n/log.jsonl" 2>/dev/null | cut -c1-400)"
    done
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  fi
done
for n in vanilla sink; do
  echo "== $n"; tail -n 4 "$RUNS/$n/stdout" | cut -c1-600
  [ -f "$RUNS/$n/done" ] && echo "$n: done"
  for i in 1 2 3; do
    tar cf "$OUTDIR/$n-last.tar" -C "$RUNS/$n" export log.jsonl stdout 2>/dev/null && break; sleep 2
  done
  for i in 1 2 3; do
    [ -d "$RUNS/$n/best" ] || break
    tar cf "$OUTDIR/$n-best.tar" -C "$RUNS/$n" best 2>/dev/null && break; sleep 2
  done
done
ls -la "$OUTDIR"
