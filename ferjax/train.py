"""Training: `python -m ferjax.train --config configs/X.py[:k=v,...] --workdir DIR [--config.a.b=v]`.

Multi-process: add --coordinator_address=HOST:PORT --num_processes=N --process_id=I (or set
FERJAX_DISTRIBUTED=1 on a cluster jax can detect). See ferjax/trainer.py for resume rules.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from ferjax import runtime, sharding

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file, optionally FILE:k=v,...',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, eval outputs.')
flags.DEFINE_string('coordinator_address', '', 'host:port of process 0 (multi-process runs).')
flags.DEFINE_integer('num_processes', 0, 'Number of processes (multi-process runs).')
flags.DEFINE_integer('process_id', -1, 'This process (multi-process runs).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  runtime.setup()
  sharding.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
  from ferjax import trainer  # after flags: importing jax-heavy modules is slow
  reports = trainer.train(FLAGS.config, FLAGS.workdir)
  if reports and runtime.is_primary():
    step_dir = sorted(os.listdir(os.path.join(FLAGS.workdir, 'eval')),
                      key=lambda s: int(s.split('_')[-1]))[-1]
    with open(os.path.join(FLAGS.workdir, 'eval', step_dir, 'results.md')) as f:
      print(f.read())
  sys.stdout.flush()


if __name__ == '__main__':
  app.run(main)
