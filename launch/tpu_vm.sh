#!/usr/bin/env bash
# Sharded training on a Cloud TPU VM slice: the same command on every worker.
#
#   TPU_NAME=fer-v5e ZONE=us-west4-a BUCKET=my-bucket launch/tpu_vm.sh [--create] [--print] -- \
#       --config configs/dan_rafdb.py:tpu,chips=16 --workdir /mnt/gcs/runs/dan
#
# Steps: (--create) create the slice; copy this checkout's committed files (git archive HEAD)
# to every worker; set up .venv on each from constraints.txt (launch/setup.sh with the tpu
# extra, which adds libtpu); run ferjax.train on all workers at once. jax.distributed finds the
# other workers from the TPU metadata (FERJAX_DISTRIBUTED=1). --print echoes the gcloud commands
# instead of running them.
# Settings (environment): TPU_NAME (required), ZONE (required), PROJECT (default: gcloud's),
# ACCELERATOR_TYPE (--create; default v5litepod-16 = 4 hosts x 4 chips), RUNTIME_VERSION
# (--create; default v2-alpha-tpuv5-lite), SPOT=1 (--create: a spot slice), FERJAX_CACHE_DIR
# (default /mnt/gcs/jax_cache with BUCKET, else ~/ferjax_cache on each worker), BUCKET (a GCS
# bucket each worker mounts at /mnt/gcs with gcsfuse, which the TPU VM image must have).
# The workdir must be storage every worker reaches (the mounted bucket): each writes its
# checkpoint shards there. Logs: each worker's output streams back here, prefixed by gcloud
# with the worker.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: TPU_NAME=NAME ZONE=ZONE launch/tpu_vm.sh [--create] [--print] --" \
       "<ferjax.train arguments>" >&2
  exit 2
}

CREATE=0
PRINT=0
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case $1 in
    --create) CREATE=1 ;;
    --print) PRINT=1 ;;
    *) usage ;;
  esac
  shift
done
[ "${1:-}" = "--" ] || usage
shift
[ $# -gt 0 ] || usage
if [ -z "${TPU_NAME:-}" ] || [ -z "${ZONE:-}" ]; then
  echo "error: set TPU_NAME and ZONE (e.g. TPU_NAME=fer-v5e ZONE=us-west4-a)" >&2
  exit 2
fi

TPU=(gcloud compute tpus tpu-vm)
WHERE=("--zone=$ZONE")
[ -z "${PROJECT:-}" ] || WHERE+=("--project=$PROJECT")
ARCHIVE=ferjax-src.tar.gz
if [ -n "${BUCKET:-}" ]; then
  CACHE=${FERJAX_CACHE_DIR:-/mnt/gcs/jax_cache}
else
  CACHE=${FERJAX_CACHE_DIR:-\$HOME/ferjax_cache}
fi
# Words as a shell reads them back: bare when safe, else in single quotes.
quote() {
  local w out=()
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
      out+=("$w")
    else
      out+=("'${w//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}
# One string per worker shell: the training arguments keep their quoting.
TRAIN_ARGS=$(quote "$@")
SETUP="mkdir -p ~/ferjax && tar -xzf ~/$ARCHIVE -C ~/ferjax && cd ~/ferjax"
SETUP="$SETUP && FERJAX_EXTRAS=tpu bash launch/setup.sh"
if [ -n "${BUCKET:-}" ]; then
  SETUP="$SETUP && sudo mkdir -p /mnt/gcs && sudo chown \$USER /mnt/gcs"
  SETUP="$SETUP && (mountpoint -q /mnt/gcs || gcsfuse --implicit-dirs $BUCKET /mnt/gcs)"
fi
RUN="cd ~/ferjax && FERJAX_DISTRIBUTED=1 FERJAX_CACHE_DIR=$CACHE"
RUN="$RUN .venv/bin/python -m ferjax.train $TRAIN_ARGS"

commands=()
add() {
  commands+=("$(quote "$@")")
}
if [ "$CREATE" = 1 ]; then
  create=("${TPU[@]}" create "$TPU_NAME" "${WHERE[@]}"
          "--accelerator-type=${ACCELERATOR_TYPE:-v5litepod-16}"
          "--version=${RUNTIME_VERSION:-v2-alpha-tpuv5-lite}")
  [ "${SPOT:-0}" = 1 ] && create+=(--spot)
  add "${create[@]}"
fi
add git archive --format=tar.gz -o "$ARCHIVE" HEAD
add "${TPU[@]}" scp "$ARCHIVE" "$TPU_NAME:" --worker=all "${WHERE[@]}"
add "${TPU[@]}" ssh "$TPU_NAME" --worker=all "${WHERE[@]}" "--command=$SETUP"
add "${TPU[@]}" ssh "$TPU_NAME" --worker=all "${WHERE[@]}" "--command=$RUN"

for line in "${commands[@]}"; do
  if [ "$PRINT" = 1 ]; then
    echo "$line"
  else
    echo "+ $line" >&2
    eval "$line"
  fi
done
