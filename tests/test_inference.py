"""Inference without the training set-up: the loader, evaluation and conversion of a run whose
training data is absent, soft-voted ensembles, and the best checkpoint kept by a metric."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from ferjax import evaluate, inference, trainer
from ferjax.data import sources
from tests.conftest import REPO
from tests.test_train import smoke

LAB = 'synthetic:lab:test'
COMMON = {'train.max_steps': 4, 'train.ckpt_every': 2, 'train.log_every': 2,
          'train.eval_every': 2, 'data.eval_sets': LAB, 'data.eval_examples': 40}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('runs')
  a, b = root / 'a', root / 'b'
  trainer.train(smoke(**COMMON, **{'train.best_metric': 'lab/test/accuracy'}), str(a))
  trainer.train(smoke(**COMMON, seed=1), str(b))
  return a, b


def test_evaluates_and_converts_without_the_training_data(runs, monkeypatch, tmp_path):
  from ferjax import convert
  workdir, _ = runs
  real_make = sources.make

  def make(spec, *args, **kw):
    if spec.endswith(':train'):
      raise FileNotFoundError(f'{spec} is not on this machine')
    return real_make(spec, *args, **kw)
  monkeypatch.setattr(sources, 'make', make)
  predictor = inference.load(str(workdir))
  assert predictor.step == 4 and predictor.class_names[0] == 'neutral'
  assert not hasattr(predictor, 'tx')
  report = evaluate.evaluate(predictor, [LAB], out_dir=str(tmp_path), progress=False)[LAB]
  assert report['n'] == 40
  tree = convert.read_ferjax(str(workdir), 'backbone', None)
  assert 'conv1' in tree['params'] and tree['batch_stats']


def test_ensemble_is_the_mean_of_member_probabilities(runs):
  members = [inference.load(str(w)) for w in runs]
  preds = []
  for p in members:
    pred, data, _ = evaluate.predict_set(p, evaluate._open(LAB, p, seed=0))
    preds.append(pred)
  y = data['label']
  mean = (preds[0]['probs'] + preds[1]['probs']) / 2
  report = evaluate.evaluate_ensemble(members, [LAB], progress=False)[LAB]
  assert report['accuracy'] == pytest.approx(100 * np.mean(mean.argmax(-1) == y))
  z = preds[0]['logits'].astype(np.float64) + preds[1]['logits']
  by_logits = evaluate.evaluate_ensemble(members, [LAB], vote='logits', progress=False)[LAB]
  assert by_logits['accuracy'] == pytest.approx(100 * np.mean(z.argmax(-1) == y))
  confusion = np.zeros((8, 8), int)
  np.add.at(confusion, (y, mean.argmax(-1)), 1)
  np.testing.assert_array_equal(report['confusion'], confusion)
  other = dataclasses.replace(members[1], method=dataclasses.replace(
      members[1].method, class_names=tuple(reversed(members[1].class_names))))
  with pytest.raises(ValueError, match='share a class space'):
    evaluate.evaluate_ensemble([members[0], other], [LAB], progress=False)


def test_ensemble_from_the_command_line(runs, tmp_path):
  a, b = runs
  out = tmp_path / 'ens'
  r = subprocess.run([sys.executable, '-m', 'ferjax.eval', f'--workdir={a}', f'--workdir={b}',
                      f'--out={out}'], cwd=REPO, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  assert 'ensemble of 2 runs' in r.stdout
  saved = json.loads((out / 'results.json').read_text())
  assert saved['workdirs'] == [str(a), str(b)] and saved['vote'] == 'probs'
  assert (out / 'confusion_lab_test.png').exists()


def test_best_checkpoint_kept_by_the_named_metric(runs):
  workdir, _ = runs
  evals = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  accs = {r['step']: r['accuracy'] for r in evals if r['kind'] == f'eval/{LAB}'}
  assert sorted(accs) == [2, 4]
  best = json.loads((workdir / 'best' / 'best.json').read_text())
  want = max(accs, key=lambda s: (accs[s], -s))                # the first of equal scores
  assert best['step'] == want and best['value'] == pytest.approx(accs[want])
  predictor = inference.load(str(workdir), step='best')
  assert predictor.step == want
  report = evaluate.evaluate(predictor, [LAB], progress=False)[LAB]
  assert report['accuracy'] == pytest.approx(accs[want])
