"""Evaluation counts every example exactly once, whatever the batch size."""
import jax
import numpy as np
import pytest

from ferjax import evaluate, trainer
from ferjax.data import pipeline
from tests.test_train import smoke


@pytest.mark.parametrize('eval_batch', [16, 24])
def test_every_example_counted_once(tmp_path, eval_batch):
  cfg = smoke(**{'data.eval_examples': 37, 'eval_batch_size': eval_batch,
                 'data.eval_sets': 'synthetic:lab:test'})
  run = trainer.Run(cfg)
  state = run.fresh_state()
  eval_set = pipeline.EvalSet('synthetic:lab:test', cfg, cfg.seed)
  pred, data = evaluate.predict_set(run.steps.predict, state, eval_set, run.mesh)
  assert pred['probs'].shape[0] == eval_set.num_batches * eval_batch
  assert data['mask'].sum() == 37
  # Every real example appears once, in dataset order, before the padding.
  labels = [int(eval_set.source[i]['label']) for i in range(37)]
  np.testing.assert_array_equal(data['label'][:37], labels)
  assert (data['label'][37:] == -1).all() and (data['mask'][37:] == 0).all()
  reports = evaluate.evaluate(run.steps.predict, state, ['synthetic:lab:test'], cfg, run.mesh,
                              run.method.class_names, out_dir=str(tmp_path), progress=False)
  r = reports['synthetic:lab:test']
  assert r['n'] == 37 and np.asarray(r['confusion']).sum() == 37
  expected = np.mean(np.argmax(pred['probs'][:37], -1) == np.asarray(labels))
  assert abs(r['accuracy'] - expected) < 1e-9
  for name in ('results.json', 'results.md', 'confusion_lab_test.png'):
    assert (tmp_path / name).stat().st_size > 0
  assert 'neutral' in (tmp_path / 'results.json').read_text()  # files name their classes
