#!/usr/bin/env bash
# Runs an experiment locally, or on every host of a TPU pod.
#
#   ./launch.sh corrective --workdir=/tmp/corrective [--config.x=...]
#   TPU_NAME=my-pod ZONE=us-central2-b ./launch.sh corrective \
#       --workdir=gs://bucket/corrective --config.distributed=True
#
# Locally it runs experiments/<study>.py with this checkout's Python (the venv
# that the README's first command creates, if present). With TPU_NAME set it
# runs the same command on every worker of the pod (gcloud ... ssh
# --worker=all) from the checkout at REMOTE_DIR (default ~/unlearnjax);
# --config.distributed=True makes each host call jax.distributed.initialize().
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
study="${1:?usage: launch.sh STUDY [flags...] (studies: $(ls "$here/experiments" | sed -n 's/\.py$//p' | tr '\n' ' '))}"
shift
script="experiments/${study}.py"
if [ ! -f "$here/$script" ]; then
  echo "error: no experiment '$study' (have: $(ls "$here/experiments" | sed -n 's/\.py$//p' | tr '\n' ' '))" >&2
  exit 2
fi
python="${PYTHON:-python3}"
[ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"

if [ -z "${TPU_NAME:-}" ]; then
  cd "$here"
  exec "$python" "$script" "$@"
fi

remote_dir="${REMOTE_DIR:-~/unlearnjax}"
args=$(printf '%q ' "$@")
exec gcloud compute tpus tpu-vm ssh "$TPU_NAME" ${ZONE:+--zone="$ZONE"} \
  --worker=all --command="cd $remote_dir && .venv/bin/python $script $args"
