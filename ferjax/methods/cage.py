"""CAGE (Wagner et al., CVPRW 2024, paper 003): circumplex affect guided expression inference.

A MaxViT-T (or EfficientNetV2-S) backbone with the official head, trained in one of three
versions (paper Sec. 4.1; official code `wagner-niklas/CAGE_expression_inference`):

  discrete  weighted CE over C classes                                   (paper Table 4 weights)
  combined  weighted CE + alpha * MSE(V/A), one head of C + 2 outputs    (Eq. 1, alpha = 5)
  va        -CCC_v - CCC_a + beta * (MSE_v + MSE_a), a new 2-output head  (Eq. 2, beta = 3)
            fine-tuned from the combined model (config.train.init_from + init_exclude)

and an EMOTIC task (`cage.task='emotic'`): 26 multi-label categories with positive-weighted BCE
(pos_weight_c = (N - n_c) / n_c) plus alpha * MSE on valence, arousal and dominance.

The head (models/AffectNet8_Maxvit_Combined/train.py) replaces torchvision's classifier after
the pooled features: LayerNorm(512) -> Linear(512, 512) -> Tanh -> Linear(512, C + 2, bias=False),
module indices classifier.2/.3/.5. The VA head (models/AffectNet8_Maxvit_VA/train.py) is a fresh
copy with Dropout(0.3) at index 5, so its last Linear(512, 2, bias=False) is classifier.6. Our
module names are those indices (`classifier_2`, ...), which makes the torch export a renaming
(ferjax.interop.cage) and makes "drop the old head" a config line: init_exclude='classifier_*'.
EfficientNetV2-S keeps torchvision's head, Dropout(0.2) + Linear(1280, C + 2) with a bias
(classifier.1), and its VA model swaps only that Linear (models/AffectNet8_Efficientnet_*).

V/A (and EMOTIC's V/A/D) outputs are the raw linear outputs: the official code neither applies
tanh nor clamps them, in training or in evaluation (generate_csv.py writes them as they are).
The fresh head layers use torch's default nn.Linear init (U(+-1/sqrt(fan_in)) for weight and
bias), as the official head is built after torchvision's own weight init has run.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ferjax import labels, losses, models, runtime
from ferjax.methods import Method

VERSIONS = ('discrete', 'combined', 'va')
TASKS = ('affectnet', 'emotic')

# Paper Table 4 (= the official `weights` tensors), canonical order neutral, happy, sad,
# surprise, fear, disgust, anger, contempt. They are normalised inverse class frequencies of the
# AffectNet training set: the 7-class row equals 1/n_c of the 287,651-image train counts to 6
# decimals; the 8-class row agrees within 1.5% (tests/methods/test_cage.py).
TABLE4_AFFECTNET8 = (0.015605, 0.008709, 0.046078, 0.083078, 0.185434, 0.305953, 0.046934,
                     0.308210)
TABLE4_AFFECTNET7 = (0.022600, 0.012589, 0.066464, 0.120094, 0.265305, 0.444943, 0.068006)
# EMOTIC training-set size used by the official script for pos_weight (EMOTIC_Model_Discrete+VAD).
EMOTIC_TRAIN_SIZE = 23266
# EMOTIC's official script normalises twice: ImageNet mean/std, then the body-crop statistics
# below. ((x - m1) / s1 - m2) / s2 = (x - (m1 + m2 s1)) / (s1 s2): one mean/std pair does both.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EMOTIC_BODY_MEAN = (0.43832874, 0.3964344, 0.3706214)
EMOTIC_BODY_STD = (0.24784276, 0.23621225, 0.2323653)


class TorchLinear(nn.Module):
  """A Dense layer (params `kernel` (in, out), `bias`) with torch's default nn.Linear init:
  kaiming_uniform(a=sqrt(5)) for the weight and U(+-1/sqrt(fan_in)) for the bias, i.e. both
  U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
      return jax.random.uniform(key, shape, dtype, -bound, bound)

    y = x @ self.param('kernel', init, (fan_in, self.features))
    return y + self.param('bias', init, (self.features,)) if self.use_bias else y


class Cage(nn.Module):
  """Backbone (pooled features) + the official head, outputs named as every method names them.

  The raw head output (B, num_cls + num_reg) is split into C logits, then 2 (V, A) or 3 (EMOTIC
  V, A, D) regression outputs, as the official scripts slice `outputs[:, :C]`, `outputs[:, C:]`.
  """
  backbone: nn.Module
  head: str              # 'maxvit' or 'efficientnet' (the layout of the official head)
  num_cls: int           # 0 for the VA version
  num_reg: int           # 0 (discrete), 2 or 3
  multilabel: bool       # EMOTIC: sigmoid scores instead of a softmax
  dropout: float         # maxvit: 0 (discrete/combined) or 0.3 (VA head); efficientnet: 0.2

  @nn.compact
  def __call__(self, image, train: bool = False):
    feats = self.backbone(image, train=train).astype(jnp.float32)           # (B, D)
    outputs = self.num_cls + self.num_reg
    if self.head == 'maxvit':
      h = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name='classifier_2')(feats)
      h = jnp.tanh(TorchLinear(feats.shape[-1], name='classifier_3')(h))    # (B, D)
      final = 'classifier_5'
      if self.dropout:       # the VA head: Dropout is classifier.5, the Linear moves to .6
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        final = 'classifier_6'
      out = TorchLinear(outputs, use_bias=False, name=final)(h)
    else:                    # torchvision EfficientNet: Dropout (classifier.0) + Linear (.1)
      h = nn.Dropout(self.dropout, deterministic=not train)(feats)
      out = TorchLinear(outputs, name='classifier_1')(h)                     # (B, O)
    res = {'embedding': feats, 'head': out}
    if self.num_cls:
      logits = out[:, :self.num_cls]
      res['logits'] = logits
      if self.multilabel:
        res['multilabel'] = jax.nn.sigmoid(logits)                          # (B, 26)
      else:
        res['probs'] = jax.nn.softmax(logits)                               # (B, C)
    if self.num_reg:
      res['va' if self.num_reg == 2 else 'vad'] = out[:, self.num_cls:]      # raw, no tanh
    return res


def head_layout(cfg) -> tuple[int, int, bool]:
  """(classification outputs, regression outputs, multi-label) for the config's task/version."""
  c = cfg.cage
  if c.task not in TASKS or c.version not in VERSIONS:
    raise ValueError(f'cage.task={c.task!r} / cage.version={c.version!r}; expected a task in '
                     f'{TASKS} and a version in {VERSIONS}')
  num_reg = 3 if c.task == 'emotic' else 2
  if c.version == 'va':
    if c.task == 'emotic':
      raise ValueError("cage.version='va' is an AffectNet model; EMOTIC uses 'combined' or "
                       "'discrete' (paper Sec. 4.3)")
    return 0, num_reg, False
  num_cls = len(labels.resolve(cfg))
  return num_cls, (num_reg if c.version == 'combined' else 0), c.task == 'emotic'


def class_weights(cfg) -> np.ndarray | None:
  """The CE class weights: 'table4' (paper Table 4 for 8 or 7 classes), 'uniform', or K floats."""
  w, k, space = cfg.cage.class_weights, cfg.model.num_classes, cfg.data.class_space
  if isinstance(w, str):
    if w == 'uniform':
      return None
    if w != 'table4':
      raise ValueError(f"cage.class_weights={w!r}; expected 'table4', 'uniform' or {k} floats")
    # Table 4's weights are in AffectNet's class order: they apply to those spaces only.
    table = {'affectnet8': TABLE4_AFFECTNET8, 'affectnet7': TABLE4_AFFECTNET7}
    if space not in table:
      raise ValueError(f'paper Table 4 has weights for the affectnet8 and affectnet7 class '
                       f'spaces, not {space!r}; set cage.class_weights')
    return np.asarray(table[space], np.float32)
  w = np.asarray(w, np.float32)
  if w.shape != (k,):
    raise ValueError(f'cage.class_weights has {w.shape} entries for {k} classes')
  return w


def pos_weight(cfg) -> np.ndarray | None:
  """EMOTIC BCE pos_weight (N - n_c) / n_c from cage.pos_counts (train positives per category)."""
  counts = tuple(cfg.cage.pos_counts)
  if not counts:
    return None
  if len(counts) != cfg.model.num_classes:
    raise ValueError(f'cage.pos_counts has {len(counts)} entries for {cfg.model.num_classes} '
                     'categories')
  return losses.pos_weight_from_counts(counts, cfg.cage.pos_total)


def build_model(cfg) -> Cage:
  m, c = cfg.model, cfg.cage
  num_cls, num_reg, multilabel = head_layout(cfg)
  kw = {'dtype': jnp.dtype(m.dtype), 'num_classes': 0}
  if m.backbone == 'maxvit_t':
    kw.update({k: tuple(v) if isinstance(v, (list, tuple)) else v
               for k, v in dict(c.maxvit).items()})
    head, dropout = 'maxvit', (c.head_dropout if c.version == 'va' else 0.0)
  elif m.backbone.startswith('efficientnet'):
    head, dropout = 'efficientnet', 0.2  # torchvision's EfficientNetV2-S classifier dropout
  else:
    raise ValueError(f'CAGE uses maxvit_t or efficientnet_v2_s, not {m.backbone!r}')
  return Cage(models.build(m.backbone, **kw), head, num_cls, num_reg, multilabel, dropout)


def build(cfg) -> Method:
  c = cfg.cage
  model = build_model(cfg)
  num_cls, num_reg, multilabel = head_layout(cfg)
  weights = None if multilabel else class_weights(cfg)
  @functools.cache
  def bce_pos_weight():
    """cage.pos_counts, else counted on the training set when the loss is first traced (so
    evaluation never pays for it); the count is printed for the config."""
    pw = pos_weight(cfg)
    if pw is None:
      from ferjax.data import sources
      src = sources.make(cfg.data.train, cfg.data.train_examples, cfg.data.image_size, cfg.seed)
      counts, total = count_positives(src)
      runtime.say(f'cage: pos_weight from {total} training examples of {cfg.data.train}; '
                  f'to skip the count set cage.pos_counts={tuple(counts.tolist())}, '
                  f'cage.pos_total={total}')
      pw = losses.pos_weight_from_counts(counts, total)
    return pw

  reg_key = 'va' if num_reg == 2 else 'vad'
  va_half = c.get('va_target_dtype', 'float32') == 'float16'
  if c.get('va_target_dtype', 'float32') not in ('float32', 'float16'):
    raise ValueError(f"cage.va_target_dtype={c.va_target_dtype!r}; expected 'float32' or "
                     "'float16'")

  def loss(outputs, batch, step):
    del step
    mask = batch['mask']
    if c.labelled_only:
      mask = mask * (batch['label'] >= 0)
    metrics, total = {}, 0.0
    if num_cls and multilabel:
      bce = losses.bce_with_logits(outputs['logits'], batch['multilabel'], mask=mask,
                                   pos_weight=bce_pos_weight())
      metrics['loss_bce'], total = bce, total + bce
    elif num_cls:
      ce = losses.cross_entropy(outputs['logits'], batch['label'], mask=mask,
                                class_weights=weights)
      metrics['loss_ce'], total = ce, total + ce
      valid = mask * (batch['label'] >= 0)
      correct = (jnp.argmax(outputs['logits'], -1) == batch['label']) * valid
      metrics['accuracy'] = 100.0 * correct.sum() / jnp.maximum(valid.sum(), 1.0)
    if num_reg:
      pred, target = outputs[reg_key], batch[reg_key]
      if va_half:   # the official VA scripts store their targets as float16
        target = target.astype(jnp.float16).astype(jnp.float32)
      reg_mask = mask * batch.get(reg_key + '_mask', batch['va_mask'])
      # torch MSELoss: the mean over all B x D elements = mean_d MSE_d.
      mse = losses.mse(pred, target, mask=reg_mask)
      metrics['loss_mse'] = mse
      if c.version == 'va':
        # Official: 3 MSE_v + 3 MSE_a + CCCLoss_v + CCCLoss_a with CCCLoss = -CCC (unbiased
        # torch.var and an n - 1 covariance): D (mean_d(1 - CCC_d) - 1) = -sum_d CCC_d.
        d = pred.shape[-1]
        ccc_term = d * (losses.ccc_loss(pred, target, mask=reg_mask, unbiased=True) - 1.0)
        metrics['loss_ccc'] = ccc_term
        total = total + ccc_term + c.beta * d * mse
      else:
        total = total + c.alpha * mse
    return total, metrics

  def predict(outputs):
    return {k: outputs[k] for k in ('probs', 'logits', 'multilabel', 'va', 'vad')
            if k in outputs}

  if (c.task == 'emotic') != labels.is_multilabel(cfg.data.class_space):
    raise ValueError(f'cage.task={c.task!r} needs a '
                     f'{"multi-label" if c.task == "emotic" else "single-label"} class space, '
                     f'not config.data.class_space={cfg.data.class_space!r}')
  groups = ('regression',) if num_reg else ()
  if num_cls:
    groups = ('multilabel' if multilabel else 'classification',) + groups
  # A V/A-only model still reports its class space's names (the data's labels are kept).
  return Method('cage', model, loss, predict, labels.class_names(cfg.data.class_space),
                metrics=groups)


def count_positives(source) -> tuple[np.ndarray, int]:
  """(positives per category, examples) of a source whose items carry 'multilabel' (EMOTIC):
  the numbers for cage.pos_counts / cage.pos_total. Reads each stored record once."""
  read = source.record if hasattr(source, 'record') else source.__getitem__
  rows = [np.asarray(read(i)['multilabel'], np.float64)
          for i in runtime.progress(range(len(source)), desc='counting EMOTIC positives')]
  return np.sum(rows, axis=0).astype(np.int64), len(rows)
