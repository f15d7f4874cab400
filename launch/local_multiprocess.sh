#!/usr/bin/env bash
# N processes of one mgjax binary on this machine, forming one JAX runtime over 127.0.0.1 (CPU: gloo).
#
#   launch/local_multiprocess.sh 2 mgjax.main --config=configs/demo.py --workdir=workdir/mp
#   launch/local_multiprocess.sh 2 mgjax.finetune --config=configs/finetune_demo.py --config.init=... --workdir=...
#   launch/local_multiprocess.sh 2 mgjax.evaluate --config=configs/eval.py --config.checkpoint=... --workdir=...
#
# Each process sees DEVICES_PER_PROCESS fake CPU devices (default 4); PYTHON is the interpreter (default
# python), PORT the coordinator's port (default: a free one). Process i's output goes to stderr with the
# prefix "[i] ". The exit status is the first non-zero status of a process (0 when all succeed). When a
# process fails, or this script gets SIGINT or SIGTERM, the others get SIGTERM (a preemption: they save
# and exit), then SIGKILL after GRACE seconds (default 60) to each process's group, its grain input
# workers included: no process is left behind.
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 N MODULE [ARGS...]" >&2
  exit 2
fi
n=$1; module=$2; shift 2
PYTHON=${PYTHON:-python}
port=${PORT:-$($PYTHON -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-4}"
pids=()
for ((i = 0; i < n; i++)); do
  setsid $PYTHON -m "$module" --coordinator=127.0.0.1:"$port" --num_processes="$n" --process_id="$i" "$@" \
    2> >(sed -u "s/^/[$i] /" >&2) &
  pids+=($!)
done

stop_all() {  # SIGTERM to every process still running; after GRACE seconds, SIGKILL to each one's group
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for ((t = 0; t < ${GRACE:-60} * 10; t++)); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  # each process leads its own group (setsid), with its input workers: none is left behind
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
}
trap 'stop_all; wait; exit 143' INT TERM

status=0
declare -A ended
while :; do
  running=0
  for pid in "${pids[@]}"; do
    [ -n "${ended[$pid]:-}" ] && continue
    if kill -0 "$pid" 2>/dev/null; then running=1; continue; fi
    wait "$pid"
    rc=$?
    ended[$pid]=1
    if [ $rc -ne 0 ] && [ $status -eq 0 ]; then
      status=$rc
      echo "local_multiprocess: a process exited with status $rc; stopping the others" >&2
      stop_all
    fi
  done
  [ $running = 0 ] && break
  sleep 0.2
done
exit $status
