"""A FERPlus run with the reference's 'probability' mode on fer2013new.csv-style rows: prepared,
trained (one-hot draws per epoch) and evaluated with the majority and any-max accuracies."""
import numpy as np
import pytest

from ferjax import config as config_lib, trainer
from ferjax.data import pipeline, prepare
from tests.conftest import REPO
from tests.data.readers import basic_expression_trees as fx

N_TRAIN, N_VAL, N_TEST = 48, 4, 16


def _votes(rng, n):
  # FERPlus column order (neutral, happiness, surprise, sadness, anger, disgust, fear,
  # contempt, unknown, NF), 10 votes a row; every fourth row mostly unknown / not-a-face.
  p = np.array([.3, .25, .1, .1, .08, .04, .04, .03, .04, .02])
  v = rng.multinomial(10, p, size=n)
  v[::4] = rng.multinomial(10, [.05] * 8 + [.3, .3], size=len(v[::4]))
  return v


@pytest.fixture(scope='module')
def ferplus_dir(tmp_path_factory):
  raw = tmp_path_factory.mktemp('ferplus_raw')
  rng = np.random.default_rng(0)
  usage = ['Training'] * N_TRAIN + ['PrivateTest'] * N_TEST + ['PublicTest'] * N_VAL
  votes = _votes(rng, len(usage))
  fx.fer2013_csv(raw / 'fer2013.csv', [(0, u) for u in usage])
  fx.fer2013new_csv(raw / 'fer2013new.csv',
                    [(u, f'fer{i:07d}.png', list(v)) for i, (u, v) in enumerate(zip(usage,
                                                                                   votes))])
  data_dir = str(tmp_path_factory.mktemp('ferplus_tfds'))
  prepare.prepare('ferplus', str(raw), data_dir, progress=False)
  # canonical order: neutral, happy, sad, surprise, fear, disgust, anger, contempt, Un, NF
  canon = votes[:, [0, 1, 3, 2, 6, 5, 4, 7, 8, 9]]
  return data_dir, canon[:N_TRAIN], canon[N_TRAIN:N_TRAIN + N_TEST]


def _majority_keep(v):
  """The reference's majority rule restated: votes <= 1 zeroed, the top count (unknown and NF
  included) above half of the rest, and an emotion."""
  fl = np.where(v <= 1, 0, v)
  return (2 * fl.max(1) > fl.sum(1)) & (fl.argmax(1) < 8)


def test_probability_mode_trains_and_evaluates(ferplus_dir, tmp_path):
  data_dir, train_votes, test_votes = ferplus_dir
  cfg = config_lib.load(f'{REPO}/configs/baseline_synthetic.py:smoke')
  with cfg.unlocked():
    cfg.update_from_flattened_dict({
        'data.train': f'ferplus:train@{data_dir}', 'data.eval_sets': f'ferplus:test@{data_dir}',
        'data.label_mode': 'probability', 'loss.target': 'soft', 'model.va_head': False,
        'batch_size': 8, 'eval_batch_size': 8, 'train.epochs': 2.0})
  data = pipeline.TrainData(cfg, cfg.seed)
  (why, dropped), = data.spaced.notes.items()
  assert "the reference's probability rules" == why and 0 < dropped < N_TRAIN
  assert len(data.spaced) == N_TRAIN - dropped
  reports = trainer.train(cfg, str(tmp_path / 'run'))
  report = reports[f'ferplus:test@{data_dir}']
  assert report['n'] == N_TEST                            # eval sets keep their rows
  votes = report['votes']
  assert votes['n'] == N_TEST
  assert votes['majority_dropped'] == int((~_majority_keep(test_votes)).sum()) > 0
  assert votes['anymax_dropped'] == int((test_votes[:, 8:].sum(1) > 3).sum()) > 0
  assert 0 <= votes['majority_accuracy'] <= 100 and 'by_complexity' in votes
