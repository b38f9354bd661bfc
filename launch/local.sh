#!/usr/bin/env bash
# N training processes on this machine, joined by jax.distributed over 127.0.0.1: the test bed
# for the cluster launchers (same flags, same code path as N hosts).
#
#   launch/local.sh N [--print] -- <ferjax.train arguments>
#   launch/local.sh 2 -- --config configs/baseline_synthetic.py:cpu --workdir runs/demo2
#
# Each process sees the devices its environment gives it: on CPU set
# XLA_FLAGS=--xla_force_host_platform_device_count=K for K devices per process; on a GPU
# machine FERJAX_GPUS_PER_PROCESS=K gives process i the GPUs i*K .. i*K+K-1.
# Logs: process 0 prints here; every process also writes FERJAX_LOG_DIR/process_<i>.log
# (default runs/logs/local-<date>-<pid>). The first process to fail stops the others (SIGTERM,
# then SIGKILL after FERJAX_KILL_AFTER seconds, default 60) and its exit status is this
# script's. SIGTERM/SIGINT are passed on, so each process saves a checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: launch/local.sh N [--print] -- <ferjax.train arguments>" >&2
  exit 2
}

[ $# -ge 1 ] || usage
N=$1
shift
if ! [[ $N =~ ^[1-9][0-9]*$ ]]; then
  echo "error: N=$N: expected a number of processes >= 1" >&2
  exit 2
fi
PRINT=0
if [ "${1:-}" = "--print" ]; then
  PRINT=1
  shift
fi
[ "${1:-}" = "--" ] || usage
shift

PY=${PYTHON:-.venv/bin/python}
# A port the OS reports free now; FERJAX_PORT pins one (two runs at once need different ports).
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PORT=${FERJAX_PORT:-$(free_port)}
LOG_DIR=${FERJAX_LOG_DIR:-runs/logs/local-$(date +%Y%m%d-%H%M%S)-$$}
GPUS=${FERJAX_GPUS_PER_PROCESS:-0}

if [ "$PRINT" = 1 ]; then
  for ((i = 0; i < N; i++)); do
    extra=()
    if [ "$GPUS" -gt 0 ]; then
      extra=(env "CUDA_VISIBLE_DEVICES=$(seq -s, $((i * GPUS)) $((i * GPUS + GPUS - 1)))")
    fi
    printf '%q ' "${extra[@]}" "$PY" -m ferjax.train "$@" \
      "--coordinator_address=127.0.0.1:$PORT" "--num_processes=$N" "--process_id=$i"
    echo
  done
  exit 0
fi

mkdir -p "$LOG_DIR"
pids=()
killer=
stop() {
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
}
# After a failure the others may sit in a collective that never completes, where the SIGTERM
# flag is never read: they are killed after a grace period.
stop_after_failure() {
  stop
  if [ -z "$killer" ]; then
    (sleep "${FERJAX_KILL_AFTER:-60}"; kill -KILL "${pids[@]}" 2>/dev/null) &
    killer=$!
  fi
}
trap 'stop' TERM INT

for ((i = 0; i < N; i++)); do
  (
    if [ "$GPUS" -gt 0 ]; then
      CUDA_VISIBLE_DEVICES=$(seq -s, $((i * GPUS)) $((i * GPUS + GPUS - 1)))
      export CUDA_VISIBLE_DEVICES
    fi
    # exec: the signal sent to this pid reaches python itself, whose handler checkpoints.
    if [ "$i" = 0 ]; then
      exec > >(tee "$LOG_DIR/process_$i.log") 2>&1
    else
      exec > "$LOG_DIR/process_$i.log" 2>&1
    fi
    exec "$PY" -m ferjax.train "$@" "--coordinator_address=127.0.0.1:$PORT" \
      "--num_processes=$N" "--process_id=$i"
  ) &
  pids+=($!)
done

# The first failure stops the rest: a process left waiting in a collective never exits.
# Polled rather than `wait -n`, which misses a process that ended before it was called.
status=0
live=("${pids[@]}")
while [ "${#live[@]}" -gt 0 ]; do
  rest=()
  for pid in "${live[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      rest+=("$pid")
      continue
    fi
    rc=0
    wait "$pid" || rc=$?
    if [ "$rc" != 0 ] && [ "$status" = 0 ]; then
      status=$rc
      echo "local.sh: process $pid exited with status $rc; stopping the others" \
           "(logs in $LOG_DIR)" >&2
      stop_after_failure
    fi
  done
  live=("${rest[@]}")
  [ "${#live[@]}" = 0 ] || sleep 1
done
[ -z "$killer" ] || kill "$killer" 2>/dev/null || true
exit "$status"
