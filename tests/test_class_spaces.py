"""Class spaces: labels are mapped into the run's space by name; what falls outside is an error,
or dropped / unlabelled and counted; reports name their classes correctly."""
import numpy as np
import pytest

from ferjax import evaluate, labels, trainer
from ferjax.data import pipeline, spaces, synthetic
from ferjax.errors import ConfigError
from tests.test_train import smoke


class _Source:
  """A tiny source in its own class space, with canonical-order votes."""

  def __init__(self, names, y, votes=None):
    self.class_names, self.y, self.votes = tuple(names), np.asarray(y), votes

  def __len__(self):
    return len(self.y)

  def labels(self):
    return self.y

  def __getitem__(self, i):
    ex = {'label': np.int32(self.y[i]), 'index': np.int32(i), 'image': np.zeros((2, 2, 3))}
    if self.votes is not None:
      ex['label_dist'] = np.asarray(self.votes[i], np.float32)
    return ex


def test_labels_are_mapped_by_name_not_position():
  lsd = _Source(labels.SPACES['lsd6'], [0, 1, 5])            # happy, sad, anger
  src = spaces.InSpace(lsd, 'affectnet8')
  got = [labels.CANONICAL[int(src[i]['label'])] for i in range(3)]
  assert got == ['happy', 'sad', 'anger']
  raf = spaces.InSpace(lsd, 'rafdb7')
  assert [labels.SPACES['rafdb7'][int(raf[i]['label'])] for i in range(3)] == got
  np.testing.assert_array_equal(raf.labels(), [3, 4, 5])


def test_outside_classes_error_drop_or_unlabel_with_counts():
  y = [0, 7, 1, 7, 0, 6, -1]                  # neutral, contempt x2, happy, neutral, anger, ?
  canon = _Source(labels.CANONICAL, y)
  with pytest.raises(ConfigError, match=r"outside the class space 'lsd6'.*neutral 2, contempt 2"):
    spaces.InSpace(canon, 'lsd6')
  dropped = spaces.InSpace(canon, 'lsd6', 'drop')
  assert dropped.dropped == {'neutral': 2, 'contempt': 2}
  assert len(dropped) == 3 and [dropped.index_of(i) for i in range(3)] == [2, 5, 6]
  np.testing.assert_array_equal(dropped.labels(), [0, 5, -1])       # happy, anger, unknown
  assert 'dropped 4 examples' in dropped.summary()
  kept = spaces.InSpace(canon, 'affectnet7', 'unlabel')
  assert len(kept) == 7 and kept.unlabelled == {'contempt': 2}
  assert int(kept[1]['label']) == -1 and int(kept[2]['label']) == 1


def test_vote_distributions_follow_the_names():
  votes = np.zeros((1, 8), np.float32)
  votes[0, [1, 3, 7]] = [6, 2, 2]                                    # happy, surprise, contempt
  src = spaces.InSpace(_Source(labels.CANONICAL, [1], votes), 'rafdb7', 'drop')
  dist = src[0]['label_dist']
  names = labels.SPACES['rafdb7']
  assert dist[names.index('happy')] == pytest.approx(0.75)           # contempt's share is gone
  assert dist[names.index('surprise')] == pytest.approx(0.25) and dist.sum() == pytest.approx(1)


def test_num_classes_must_match_the_named_space():
  cfg = smoke(**{'model.num_classes': 6})
  with pytest.raises(ConfigError, match=r"num_classes=6 .*class_space='affectnet8'.*lsd6"):
    labels.resolve(cfg)
  with pytest.raises(ConfigError, match='unknown class space'):
    labels.resolve(smoke(**{'data.class_space': 'affectnet9'}))


@pytest.mark.parametrize('space', ['lsd6', 'affectnet7'])
def test_runs_on_8_class_data_report_supports_under_the_right_names(space):
  """A 6-class and a 7-class run on the 8-class synthetic data: each per-class support in the
  report equals the number of test examples whose class has that name."""
  cfg = smoke(**{'data.class_space': space, 'data.outside_space': 'drop',
                 'data.eval_examples': 64, 'data.eval_sets': 'synthetic:lab:test'})
  run = trainer.Run(cfg)
  report = evaluate.evaluate(run.predictor(run.fresh_state()), ['synthetic:lab:test'],
                             progress=False)['synthetic:lab:test']
  raw = synthetic.SyntheticFaces('lab', 'test', 64, cfg.data.image_size, cfg.seed).labels()
  names = labels.class_names(space)
  for name in names:
    want = int(np.sum(raw == labels.CANONICAL.index(name)))
    assert report['per_class'][name]['support'] == want, name
  outside = {n: int(np.sum(raw == labels.CANONICAL.index(n))) for n in labels.CANONICAL
             if n not in names}
  assert report['dropped_outside_space'] == {k: v for k, v in outside.items() if v}
  assert report['n'] == 64 - sum(outside.values())
  # Training draws only from the space too.
  data = pipeline.TrainData(cfg, cfg.seed)
  assert set(np.unique(data.spaced.labels())) <= set(range(len(names)))


def test_outside_classes_without_a_setting_stop_the_run():
  with pytest.raises(ConfigError, match="outside the class space 'affectnet7'.*contempt"):
    trainer.Run(smoke(**{'data.class_space': 'affectnet7'}))
