#!/usr/bin/env bash
# Runs an experiment: one process, N local workers, SLURM tasks, or every host
# of a TPU pod. Every mode runs the same script (unlearnjax/sweep.py spreads
# the study's runs over the workers; each writes results-worker<i>.jsonl and
# the last to finish writes the report; rerunning finishes what is left).
#
#   ./launch.sh corrective --workdir=DIR [--config.x=...]   # one process
#   ./launch.sh corrective --workers=2 --workdir=DIR        # 2 local workers
#       (one per GPU when there are GPUs, round robin; CPU processes here)
#   sbatch --array=0-7 --wrap './launch.sh corrective --workdir=DIR'
#       (a SLURM array: each task is a worker, SLURM_ARRAY_TASK_* are read)
#   srun --ntasks=8 --gpus-per-task=1 ./launch.sh corrective --workdir=DIR
#       (SLURM tasks of one step: SLURM_PROCID / SLURM_NTASKS are read)
#   TPU_NAME=my-pod ZONE=us-central2-b ./launch.sh corrective --workdir=DIR
#       (every host of the pod is a worker: TPU_WORKER_ID and
#       TPU_WORKER_HOSTNAMES, from the TPU VM's metadata when not set)
#   ... --config.distributed=True
#       (data-parallel instead: one run at a time over every device and host,
#       jax.distributed.initialize(); for models too big for one device)
#
# The Python is the venv the README's first command creates, if present.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
studies="$(ls "$here/experiments" | sed -n 's/\.py$//p' | tr '\n' ' ')"
study="${1:?usage: launch.sh STUDY [--workers=N] [flags...] (studies: $studies)}"
shift
script="experiments/${study}.py"
if [ ! -f "$here/$script" ]; then
  echo "error: no experiment '$study' (have: $studies)" >&2
  exit 2
fi
python="${PYTHON:-python3}"
[ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"

workers=1
args=()
for arg in "$@"; do
  case "$arg" in
    --workers=*) workers="${arg#--workers=}" ;;
    *) args+=("$arg") ;;
  esac
done
if ! [[ "$workers" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: --workers=$workers: give a positive whole number of local worker processes" >&2
  exit 2
fi

if [ -n "${TPU_NAME:-}" ]; then
  remote_dir="${REMOTE_DIR:-~/unlearnjax}"
  quoted=$(printf '%q ' "${args[@]}")
  md='http://metadata.google.internal/computeMetadata/v1/instance/attributes'
  # Each host: its worker number and the pod's hosts, from the TPU VM's
  # metadata where the environment does not already say.
  setup="export TPU_WORKER_ID=\${TPU_WORKER_ID:-\$(curl -s -H Metadata-Flavor:Google $md/agent-worker-number)}; export TPU_WORKER_HOSTNAMES=\${TPU_WORKER_HOSTNAMES:-\$(curl -s -H Metadata-Flavor:Google $md/worker-network-endpoints)}"
  exec gcloud compute tpus tpu-vm ssh "$TPU_NAME" ${ZONE:+--zone="$ZONE"} \
    --worker=all --command="cd $remote_dir && $setup && .venv/bin/python $script $quoted"
fi

cd "$here"
if [ "$workers" -eq 1 ]; then
  exec "$python" "$script" "${args[@]}"
fi

gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
pids=()
for ((i = 0; i < workers; i++)); do
  (
    export UNLEARNJAX_WORKER_INDEX=$i UNLEARNJAX_NUM_WORKERS=$workers
    if [ "$gpus" -gt 0 ]; then
      export CUDA_VISIBLE_DEVICES=$((i % gpus))
      per_gpu=$(( (workers + gpus - 1) / gpus ))
      [ "$per_gpu" -gt 1 ] && export XLA_PYTHON_CLIENT_MEM_FRACTION=$(awk "BEGIN {print 0.9 / $per_gpu}")
    fi
    exec "$python" "$script" "${args[@]}"
  ) &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
if [ "$status" -ne 0 ]; then
  echo "error: a worker exited with status $status; rerun the same command to finish the sweep (finished runs are kept)" >&2
fi
exit "$status"
