"""Training: `python -m ferjax.train --config configs/X.py[:k=v] --workdir DIR [--config.a.b=v]`.

Multi-process: add --coordinator_address=HOST:PORT --num_processes=N --process_id=I (or set
FERJAX_DISTRIBUTED=1 on a cluster jax can detect). See ferjax/trainer.py for resume rules.
--dry_run compiles the train step and prints the memory per chip instead of training.
"""
from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from ferjax import cli as cli_lib, runtime, sharding
from ferjax.errors import UserError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file, optionally FILE:k=v,...',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, eval outputs.')
flags.DEFINE_string('coordinator_address', '', 'host:port of process 0 (multi-process runs).')
flags.DEFINE_integer('num_processes', 0, 'Number of processes (multi-process runs).')
flags.DEFINE_integer('process_id', -1, 'This process (multi-process runs).')
flags.DEFINE_boolean('dry_run', False, 'Compile the train step for the config\'s mesh and '
                     'print the memory one chip needs (ferjax/dry_run.py); no training.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {argv[1:]}')
  runtime.setup()
  workdir = runtime.local_path(FLAGS.workdir)   # a bucket URL fails before jax.distributed
  sharding.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
  if FLAGS.dry_run:
    from ferjax import dry_run
    report = dry_run.run(FLAGS.config)
    if runtime.is_primary():
      print('\n'.join(report.lines()))
    return
  from ferjax import trainer  # after flags: importing jax-heavy modules is slow
  reports = trainer.train(FLAGS.config, workdir)
  if reports and runtime.is_primary():
    steps = [int(d[5:]) for d in os.listdir(os.path.join(workdir, 'eval'))
             if d.startswith('step_') and d[5:].isdigit()]
    with open(os.path.join(workdir, 'eval', f'step_{max(steps)}', 'results.md')) as f:
      print(f.read())
  sys.stdout.flush()


def cli() -> None:
  cli_lib.run(main)


if __name__ == '__main__':
  cli()
