#!/usr/bin/env bash
# A Cloud TPU pod slice: the same command on every worker; jax.distributed finds its peers itself.
#   launch/tpu_pod.sh my-tpu us-central2-b --config=configs/vmae_h.py --workdir=/mnt/shared/runs/vmae_h \
#       --config.data.data_dir=/mnt/shared/data   # paths every worker reads and writes (NFS, GCS FUSE)
set -euo pipefail
tpu=$1; zone=$2; shift 2
args=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all \
  --command="cd ~/mgjax && .venv/bin/python -m mgjax.main --distributed $args"
