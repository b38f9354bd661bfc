"""Evaluation: `python -m ferjax.eval --workdir DIR [--datasets a,b,...] [--out DIR]`.

Restores the latest (or `--step`) checkpoint of a run, rebuilds its method from the config
saved with it, scores it on one or many eval sets (default: the run's `eval_sets`) and prints
the table. Outputs (JSON, markdown, confusion PNGs) go to --out, default WORKDIR/eval/step_N.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
import jax

from ferjax import runtime

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Run directory (holds checkpoints/).', required=True)
flags.DEFINE_string('datasets', '', 'Comma-separated dataset specs; default: the run\'s eval_sets.')
flags.DEFINE_string('out', '', 'Output directory; default: WORKDIR/eval/step_N.')
flags.DEFINE_integer('step', None, 'Checkpoint step; default: the latest.')
flags.DEFINE_integer('eval_examples', None, 'Override the number of examples per eval set.')


def main(argv):
  del argv
  runtime.setup()
  from ferjax import checkpoint, evaluate, trainer  # heavy imports after flags are parsed
  mngr = checkpoint.Manager(FLAGS.workdir, read_only=True)
  cfg = mngr.config(FLAGS.step)
  cfg = trainer.reconcile_config(cfg)
  if FLAGS.eval_examples:
    cfg.data.eval_examples = FLAGS.eval_examples
  run = trainer.Run(cfg)
  step = FLAGS.step if FLAGS.step is not None else mngr.latest_step()
  state = run.restore_params(mngr, step)
  specs = [s for s in (FLAGS.datasets or cfg.data.eval_sets).split(',') if s]
  if not specs:
    raise app.UsageError('the run names no eval sets (config.data.eval_sets is empty): '
                         'pass --datasets, e.g. --datasets=synthetic:lab:test')
  out = FLAGS.out or os.path.join(FLAGS.workdir, 'eval', f'step_{step}')
  evaluate.evaluate(run.steps.predict, state, specs, cfg, run.mesh, run.method.class_names, out)
  if jax.process_index() == 0:
    with open(os.path.join(out, 'results.md')) as f:
      print(f'\n{FLAGS.workdir} @ step {step}  (classes: {", ".join(run.method.class_names)})')
      print(f.read())
    print(f'wrote {out}/results.json, results.md and confusion PNGs', file=sys.stderr)


if __name__ == '__main__':
  app.run(main)
