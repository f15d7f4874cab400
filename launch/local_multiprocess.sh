#!/usr/bin/env bash
# N processes on this machine forming one JAX runtime over 127.0.0.1 (CPU: gloo collectives).
#   launch/local_multiprocess.sh 2 --config=configs/demo.py --workdir=workdir/mp
# Each process sees DEVICES_PER_PROCESS fake CPU devices (default 4).
set -euo pipefail
n=$1; shift
port=${PORT:-12355}
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-4}"
pids=()
for ((i = 0; i < n; i++)); do
  python -m mgjax.main --coordinator=127.0.0.1:$port --num_processes=$n --process_id=$i "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
