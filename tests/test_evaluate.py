"""Evaluation counts every example exactly once, whatever the batch size."""
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
  predictor = run.predictor(run.fresh_state())
  eval_set = pipeline.EvalSet('synthetic:lab:test', cfg, cfg.seed, run.method)
  assert eval_set.num_batches * eval_batch > 37        # the last batch is padded
  pred, data, sample = evaluate.predict_set(predictor, eval_set)
  assert pred['probs'].shape[0] == 37 and data['mask'].sum() == 37
  # Every real example appears once, in dataset order; the padding is gone.
  labels = [int(eval_set.source[i]['label']) for i in range(37)]
  np.testing.assert_array_equal(data['label'], labels)
  np.testing.assert_array_equal(data['index'], np.arange(37))
  assert sample['image'].shape[0] == eval_batch
  reports = evaluate.evaluate(predictor, ['synthetic:lab:test'], out_dir=str(tmp_path),
                              progress=False)
  r = reports['synthetic:lab:test']
  assert r['n'] == 37 and np.asarray(r['confusion']).sum() == 37
  expected = 100 * np.mean(np.argmax(pred['probs'], -1) == np.asarray(labels))   # percent
  assert abs(r['accuracy'] - expected) < 1e-9
  for name in ('results.json', 'results.md', 'confusion_lab_test.png'):
    assert (tmp_path / name).stat().st_size > 0
  assert 'neutral' in (tmp_path / 'results.json').read_text()  # files name their classes
