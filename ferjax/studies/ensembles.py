"""Paper 004's strong and weak models and its soft-voted ensembles (Tables 2-4) as one resumable
command:

  python -m ferjax.studies.ensembles --config configs/mtl_synthetic.py:cpu --workdir runs/ens

Members (each one run of the project's trainer in WORKDIR/members/NAME, the config file loaded
as `FILE:ARGS,mix=MIX,appearance=APP[,member=I]`):
  strong-MIX-APP     the full training set (Table 2)
  weak-MIX-APP-I     fold I of --folds disjoint stratified folds (Table 3; the paper: 5 x 20%)
with MIX in mu (mixup) / ma (mix_augment) and APP in vgg (VGGFace2 ResNet-50), dino (a
ResNet-50 from any state_dict: the authors' DINO-VGGFace weights are unreleased) and mvit
(MobileViTv2-2.0). A member is kept by its best validation macro F1 (the config's
`train.best_metric`) and evaluated from `best`.

Ensembles (Table 4; the paper's picks, "best" meaning the best row of Tables 2 and 3):
  mu_mvit_weak        the MU MobileViTv2 weak models
  mu_strong_mu_weak   MU strong (DINO) + the MU VGGFace2 weak models
  ma_strong_ma_weak   MA strong (DINO) + the MA VGGFace2 weak models (MA's best weak set)
  mu_ma_best_weak     the MU MobileViTv2 and MA VGGFace2 weak models
  best3               MU strong (DINO) + MA VGGFace2 weak + MU MobileViTv2 weak
Every ensemble votes through ferjax.evaluate.evaluate_ensemble: the mean of the members'
probabilities, or `--vote logits`, the argmax of the summed BN'd logits (the authors' test.py).

`--ensembles` picks the ensembles (a Table 4 name or `NAME:PART+PART`, PART strong-MIX-APP or
weak-MIX-APP, e.g. `ma_vgg:strong-ma-vgg+weak-ma-vgg`) and `--tables 2,3` adds every strong /
weak member of those tables; only the members these need are trained. WORKDIR gets members.csv (each member alone)
and ensembles.csv (each ensemble and its members' mean), rewritten as they finish; a finished
member leaves member.json and is not trained again.
"""
from __future__ import annotations

import csv
import json
import os
import time

from absl import flags

from ferjax import cli as cli_lib, runtime
from ferjax.errors import UserError

FLAGS = flags.FLAGS
MIXES = {'mu': 'mixup', 'ma': 'mix_augment'}
APPS = {'vgg': 'resnet50_vggface2', 'dino': 'resnet50', 'mvit': 'mobilevitv2_200'}
# Table 2: strong models; Table 3: weak model sets (mix, appearance).
STRONG = [(m, a) for m in ('ma', 'mu') for a in ('vgg', 'dino')]
WEAK = [(m, a) for m in ('ma', 'mu') for a in ('vgg', 'dino', 'mvit')]
# Table 4: name -> (strong members, weak sets).
ENSEMBLES = {
    'mu_mvit_weak': ([], [('mu', 'mvit')]),
    'mu_strong_mu_weak': ([('mu', 'dino')], [('mu', 'vgg')]),
    'ma_strong_ma_weak': ([('ma', 'dino')], [('ma', 'vgg')]),
    'mu_ma_best_weak': ([], [('mu', 'mvit'), ('ma', 'vgg')]),
    'best3': ([('mu', 'dino')], [('ma', 'vgg'), ('mu', 'mvit')]),
}


def strong_name(mix: str, app: str) -> str:
  return f'strong-{mix}-{app}'


def weak_names(mix: str, app: str, folds: int) -> list[str]:
  return [f'weak-{mix}-{app}-{i}' for i in range(folds)]


def member_args(name: str) -> str:
  """'weak-ma-vgg-3' -> the config arguments of that member."""
  parts = name.split('-')
  if parts[0] not in ('strong', 'weak') or parts[1] not in MIXES or parts[2] not in APPS:
    raise UserError(f'unknown member {name!r}')
  args = f'mix={MIXES[parts[1]]},appearance={APPS[parts[2]]}'
  return args + (f',member={int(parts[3])}' if parts[0] == 'weak' else '')


def parse_ensemble(entry: str) -> tuple[str, tuple[list, list]]:
  """A Table 4 name, or `NAME:PART+PART...` with PART strong-MIX-APP (one model) or weak-MIX-APP
  (its fold set), e.g. `ma_vgg:strong-ma-vgg+weak-ma-vgg`."""
  name, sep, parts = entry.partition(':')
  if not sep:
    if name not in ENSEMBLES:
      raise UserError(f'unknown ensemble {name!r}; known: {list(ENSEMBLES)} or NAME:PART+...')
    return name, ENSEMBLES[name]
  strong, weak = [], []
  for part in parts.split('+'):
    kind, _, rest = part.partition('-')
    mix, _, app = rest.partition('-')
    if kind not in ('strong', 'weak') or mix not in MIXES or app not in APPS:
      raise UserError(f'ensemble {entry!r}: {part!r} is not strong-MIX-APP or weak-MIX-APP')
    (strong if kind == 'strong' else weak).append((mix, app))
  return name, (strong, weak)


def ensemble_members(entry: str, folds: int) -> list[str]:
  strong, weak = parse_ensemble(entry)[1]
  return ([strong_name(*s) for s in strong]
          + [n for w in weak for n in weak_names(*w, folds)])


def plan(tables, ensembles, folds: int) -> list[str]:
  """Members to train, in order: those of the tables asked, then of the ensembles asked."""
  names = []
  if 2 in tables:
    names += [strong_name(*s) for s in STRONG]
  if 3 in tables:
    names += [n for w in WEAK for n in weak_names(*w, folds)]
  for e in ensembles:
    names += ensemble_members(e, folds)
  return list(dict.fromkeys(names))


def train_member(config: str, workdir: str, name: str, folds: int) -> str:
  from ferjax import config as config_lib, trainer
  run_dir = os.path.join(workdir, 'members', name)
  done = os.path.join(run_dir, 'member.json')
  if os.path.exists(done):
    return run_dir
  path, _, arg = config.partition(':')
  extra = member_args(name) + (f',folds={folds}' if name.startswith('weak') and folds != 5
                               else '')
  cfg = config_lib.load(f'{path}:{arg + "," if arg else ""}{extra}')
  t0 = time.time()
  trainer.train(cfg, run_dir)
  with open(done + '.tmp', 'w') as f:
    json.dump({'name': name, 'config': f'{config},{extra}', 'wall_s': time.time() - t0}, f)
  os.replace(done + '.tmp', done)   # written last: a member without it is not finished
  return run_dir


_LOADED: dict = {}


def _predictor(workdir: str, member: str):
  """A member's best checkpoint, loaded (and its predict step compiled) once per process."""
  from ferjax import inference
  path = os.path.abspath(os.path.join(workdir, 'members', member))
  if path not in _LOADED:
    _LOADED[path] = inference.load(path, 'best')
  return _LOADED[path]


def evaluate(workdir: str, label: str, members: list[str], vote: str) -> dict:
  """{spec: macro F1} of the soft-voted ensemble of `members` (one member: itself)."""
  from ferjax import evaluate as evaluate_lib
  predictors = [_predictor(workdir, m) for m in members]
  specs = [s for s in predictors[0].cfg.data.eval_sets.split(',') if s]
  out = os.path.join(workdir, 'eval', f'{label}-{vote}')
  reports = evaluate_lib.evaluate_ensemble(predictors, specs, vote, out, progress=False,
                                           meta={'members': members, 'vote': vote})
  return {s: reports[s]['macro_f1'] for s in specs}


def _write_csv(path: str, rows: list[dict]) -> None:
  columns = list(dict.fromkeys(k for r in rows for k in r))
  with open(path + '.tmp', 'w', newline='') as f:
    w = csv.DictWriter(f, columns)
    w.writeheader()
    w.writerows(rows)
  os.replace(path + '.tmp', path)


def study(config: str, workdir: str, tables, ensembles, folds: int, vote: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  single = {}
  member_rows = []
  for name in plan(tables, ensembles, folds):
    train_member(config, workdir, name, folds)
    single[name] = evaluate(workdir, name, [name], 'probs')
    member_rows.append({'member': name, **single[name]})
    _write_csv(os.path.join(workdir, 'members.csv'), member_rows)
  rows = []
  for entry in ensembles:
    e, members = parse_ensemble(entry)[0], ensemble_members(entry, folds)
    scores = evaluate(workdir, e, members, vote)
    mean = {f'{s} members mean': sum(single[m][s] for m in members) / len(members)
            for s in scores}
    rows.append({'ensemble': e, 'vote': vote, 'size': len(members), **scores, **mean})
    _write_csv(os.path.join(workdir, 'ensembles.csv'), rows)
  runtime.say(f'{workdir}: members.csv ({len(member_rows)} rows), ensembles.csv ({len(rows)})')


def _define_flags() -> None:
  flags.DEFINE_string('config', None, 'Config file (and arguments) of the members, e.g. '
                      'configs/mtl_synthetic.py:cpu.')
  flags.DEFINE_string('workdir', None, 'Study directory: members/, eval/, the csv tables.')
  flags.DEFINE_list('tables', ['2', '3'], 'Tables whose members to train and score (2, 3).')
  flags.DEFINE_list('ensembles', list(ENSEMBLES), 'Ensembles: Table 4 names or '
                    'NAME:PART+PART (PART strong-MIX-APP or weak-MIX-APP).')
  flags.DEFINE_integer('folds', 5, 'Weak models per set (disjoint stratified folds).')
  flags.DEFINE_enum('vote', 'probs', ['probs', 'logits'], 'Mean probabilities or summed '
                    'logits (the authors\' vote).')
  flags.mark_flags_as_required(['config', 'workdir'])


def main(argv) -> int:
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {argv[1:]}')
  runtime.setup()
  for e in FLAGS.ensembles:
    parse_ensemble(e)
  tables = {int(t) for t in FLAGS.tables if t}
  if not tables <= {2, 3}:
    raise UserError(f'--tables={FLAGS.tables}: expected 2 and / or 3')
  study(FLAGS.config, FLAGS.workdir, tables, FLAGS.ensembles, FLAGS.folds, FLAGS.vote)
  return 0


def cli() -> None:
  _define_flags()
  cli_lib.run(main)


if __name__ == '__main__':
  cli()
