"""Evaluation: `python -m ferjax.eval --workdir DIR [--workdir DIR2] [--datasets a,b] [--out DIR]`.

Restores a run's latest checkpoint (or `--step N`, or `--step best`) through `ferjax.inference`
(no optimiser, no training set: a run evaluates where only its workdir is), scores it on its
eval sets or `--datasets`, prints the table and writes results.json, results.md and the
pictures. Outputs go to WORKDIR/eval/step_N for the run's own eval sets, else to
WORKDIR/eval/step_N-<datasets>; another evaluation there is never replaced without --overwrite
(the same one is redone).

Several --workdir flags evaluate the soft-voted ensemble of those runs (they must share a class
space): the mean of their probabilities, or with --vote logits the softmax of their summed
logits. Each member reads the data with its own preprocessing. An ensemble needs --out.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

from absl import flags

from ferjax import cli as cli_lib
from ferjax.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_multi_string('workdir', None, 'Run directory (holds checkpoints/); repeat for an '
                          'ensemble.', required=True)
flags.DEFINE_string('datasets', '', "Comma-separated dataset specs; default: the run's eval_sets.")
flags.DEFINE_string('out', '', 'Output directory; default: WORKDIR/eval/step_N[-DATASETS].')
flags.DEFINE_string('step', None, "Checkpoint step, or 'best'; default: the latest.")
flags.DEFINE_integer('eval_examples', None, 'Examples per synthetic eval set (prepared sets are '
                     'read whole).')
flags.DEFINE_enum('vote', 'probs', ['probs', 'logits'], 'Ensemble vote: mean probabilities or '
                  'summed logits.')
flags.DEFINE_bool('overwrite', False, 'Replace an existing evaluation in the output directory.')


def default_out(workdir: str, step: int, specs: list[str], run_specs: list[str]) -> str:
  """WORKDIR/eval/step_N for the run's own eval sets; other sets get their names appended, so
  two evaluations never share a directory."""
  from ferjax.data import sources
  base = os.path.join(workdir, 'eval', f'step_{step}')
  if specs == run_specs:
    return base
  tag = '+'.join(sources.display_name(s).replace('/', '_') for s in specs)
  return f'{base}-{tag[:120]}'


_SAME = ('datasets', 'workdirs', 'steps', 'eval_examples')


def claim_out(out: str, overwrite: bool, meta: dict) -> None:
  """Refuses a directory holding another evaluation unless --overwrite; the same evaluation
  (same sets, runs, steps and sizes) is simply redone. Either way the directory is cleared, so
  no picture of an earlier evaluation stays beside the new table."""
  if not (os.path.isdir(out) and os.listdir(out)):
    return
  saved = {}
  try:
    with open(os.path.join(out, 'results.json')) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    pass
  same = all(saved.get(k) == meta.get(k) for k in _SAME)
  if not (same or overwrite):
    what = ', '.join(saved.get('datasets', [])) or 'other files'
    raise UserError(f'{out} already holds another evaluation ({what}); pass --overwrite to '
                    'replace it, or choose another --out')
  shutil.rmtree(out)


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {argv[1:]}')
  from ferjax import runtime
  runtime.setup()
  from ferjax import evaluate, inference  # heavy imports after flags are parsed
  import jax
  workdirs, step = FLAGS.workdir, cli_lib.parse_step(FLAGS.step)
  predictors = [inference.load(w, step, FLAGS.eval_examples) for w in workdirs]
  first = predictors[0]
  run_specs = [s for s in first.cfg.data.eval_sets.split(',') if s]
  specs = [s for s in FLAGS.datasets.split(',') if s] or run_specs
  if not specs:
    raise UserError('the run names no eval sets (config.data.eval_sets is empty): pass '
                    '--datasets, e.g. --datasets=synthetic:lab:test')
  meta = {'datasets': specs, 'workdirs': [os.path.abspath(w) for w in workdirs],
          'steps': [p.step for p in predictors], 'eval_examples': first.cfg.data.eval_examples}
  if len(predictors) > 1:
    if not FLAGS.out:
      raise UserError('an ensemble evaluation needs --out DIR')
    out = FLAGS.out
    if jax.process_index() == 0:
      claim_out(out, FLAGS.overwrite, meta)
    evaluate.evaluate_ensemble(predictors, specs, FLAGS.vote, out, meta=meta | {
        'vote': FLAGS.vote})
    title = f'ensemble of {len(predictors)} runs ({FLAGS.vote} vote)'
  else:
    out = FLAGS.out or default_out(workdirs[0], first.step, specs, run_specs)
    if jax.process_index() == 0:
      claim_out(out, FLAGS.overwrite, meta)
    evaluate.evaluate(first, specs, out, meta=meta)
    title = f'{workdirs[0]} @ step {first.step}'
  if jax.process_index() == 0:
    with open(os.path.join(out, 'results.md')) as f:
      print(f'\n{title}  (classes: {", ".join(first.class_names)}; rates in %)')
      print(f.read())
    print(f'wrote {out}/results.json, results.md and the pictures', file=sys.stderr)


def cli() -> None:
  cli_lib.run(main)


if __name__ == '__main__':
  cli()
