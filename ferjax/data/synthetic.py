"""Procedural facial-expression benchmark: the embedded default dataset of ferjax.

Faces are drawn from parameters, deterministically in (seed, domain, split, index), so any
example can be fetched at random (a grain `RandomAccessDataSource`) and nothing is downloaded.

Expressions are built from facial actions (synthetic_geometry.ACTION_NAMES, loosely after FACS):
each class is a prototype over the actions (neutral = none; happy = lip-corner pull + cheek raise;
sad = inner-brow raise + lip-corner depressor; surprise = brows up + eyes wide + jaw drop; fear =
brows up and together + eyes wide + lip stretch; disgust = nose wrinkle + upper-lip raise + brows
down; anger = brows down + lid tension + lips pressed; contempt = one-sided lip-corner raise).
An example's action vector is intensity * prototype (intensity ~ U[0.5, 1] in the posed lab and
cartoon domains, U[0.3, 1] elsewhere; 0 for neutral), in 10% (posed) or 20-25% of the expressive
examples a blend w * primary + (1 - w) * secondary with w ~ U[0.55, 0.85] (the label is the
primary), plus N(0, 0.06) noise per action. Faces are cropped like the aligned FER datasets
(the face spans 70-85% of the width; hair and shoulders are cut).

Per example (all numpy):
  image uint8 [S,S,3]; label int32 (canonical order CLASS_NAMES); votes int32 [10] (FERPlus-style
  counts of 10 simulated annotators over the 8 emotions, unknown, not-a-face; sum 10);
  label_dist float32 [8] (votes over the emotions, normalised; one-hot of label when no annotator
  chose an emotion); va float32 [2] (valence, arousal in [-1, 1]: intensity times the class's
  direction on the circumplex, blended for blends, + N(0, 0.05)); va_mask float32 (1.0);
  landmarks float32 [68,2] (iBUG 300-W order, (x, y) of the output image, in [0, 1] for the
  face inside the frame; nothing clips them: in `wild` about 1 face in 4,000 (extreme pitch and
  an open jaw) puts the chin up to 2% of the height past the bottom edge); landmarks_mask
  float32 (1.0); multilabel float32 [8] (emotions chosen by >= 30% of the annotators, i.e. >= 3
  of 10 votes; may be all zero when votes spread); intensity float32; identity float32 [20]
  (fields synthetic_geometry.IDENTITY_FIELDS); domain int32 (index in DOMAINS); index int32.

Annotators perceive the drawn action vector with noise that grows with occlusion (hidden regions
read as neutral), image degradation and the domain, fit each class prototype at its best
intensity, and pick by Gumbel-max; unknown / not-a-face votes grow with occlusion, degradation
and ambiguity. So low intensity, blends, occluders and low quality spread the votes.

Domains (DOMAINS, id = position), after real datasets:
  lab       grey, 48 px native (resized to the requested size), frontal, plain background
  wild      colour, 3-D head pose (yaw/pitch/roll of the geometry), lighting gradient, clutter
  cartoon   flat saturated colours, thick outlines, big eyes, exaggerated expressions, no shading
  lowq      32-64 px native (blurred up), low contrast, sensor noise, JPEG quality 10-30
  occluded  glasses, sunglasses, medical masks, hands, hair fringes over the brows

Speed (`python -m ferjax.data.synthetic --bench`: whole __getitem__, images per CPU-second, one
core of the 2-core build VM, which runs plain Python loops about 3x slower than a current
desktop core; runs vary by +-20% with the neighbours' load):
  112 px: lab 1050-1400, wild 950-1100, cartoon 1150-1250, lowq 780-870, occluded 1000-1070
  224 px: lab ~1150, wild ~620, cartoon ~750, lowq ~550, occluded ~700
Most of the time is Python overhead around ~40 PIL draw calls per face on a 2x canvas; the face
geometry is one matrix product (synthetic_geometry), the lighting and sensor noise are cached.

Learnability and domain gap (measured while tuning the renderer, not in the tests): the README
demo (a quarter-width ResNet-18, 64 px, 16k `lab` examples, 4 epochs, ~5 min on 2 cores) reaches
95% on the lab test split and 36-66% on the other domains; a small 4-layer CNN on 6k examples
reaches 0.84 on lab but only 0.31 on wild in 6 epochs (wild needs more data and capacity). A
linear model on the 68 landmarks separates the classes in every domain (tests), so the
expression is in every domain's geometry.
"""
from __future__ import annotations

import bisect
import math
import time

from absl import app, flags
import numpy as np

from ferjax.data.synthetic_geometry import (ACTION_NAMES, DOMAINS, IDENTITY_FIELDS, NUM_ACTIONS,
                                            NUM_CLASSES, PROTOTYPES, FaceParams)
from ferjax.data.synthetic_render import render
from ferjax.labels import CANONICAL

__all__ = ['CLASS_NAMES', 'DOMAINS', 'SPLITS', 'ACTION_NAMES', 'IDENTITY_FIELDS', 'PROTOTYPES',
           'VA_DIRECTIONS', 'FaceParams', 'SyntheticFaces', 'sample_params', 'render',
           'simulate_votes', 'valence_arousal', 'make_example', 'render_grid', 'benchmark']

CLASS_NAMES = ('neutral', 'happy', 'sad', 'surprise', 'fear', 'disgust', 'anger', 'contempt')
SPLITS = ('train', 'val', 'test')
NUM_VOTES = 10
# Circumplex direction per class: (angle in degrees from +valence towards +arousal, radius).
_CIRCUMPLEX = ((0, 0.0), (35, 0.9), (215, 0.8), (75, 0.9), (120, 0.9), (160, 0.8), (140, 0.9),
               (190, 0.6))
VA_DIRECTIONS = np.array([[r * math.cos(math.radians(a)), r * math.sin(math.radians(a))]
                          for a, r in _CIRCUMPLEX], np.float32)

# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------
# Pose ranges per domain: yaw, pitch, roll (radians, +-), zoom (lo, hi), shift (+- fraction).
# Zoom 1 shows the head and shoulders; the FER datasets crop to the face (RAF-DB aligned,
# FER2013, AffectNet boxes), hence zooms > 1 (at 1.3 the face spans about 80% of the width).
_POSE = {'lab': (0.0, 0.0, 0.0, 1.25, 1.32, 0.0), 'wild': (0.6, 0.3, 0.35, 1.0, 1.24, 0.05),
         'cartoon': (0.15, 0.1, 0.12, 1.1, 1.2, 0.03), 'lowq': (0.4, 0.2, 0.2, 1.05, 1.28, 0.04),
         'occluded': (0.3, 0.15, 0.15, 1.12, 1.26, 0.03)}
# Expression intensity range and share of two-expression blends per domain: lab and cartoon
# faces are posed at the apex (as CK+ and FERG), the others spontaneous and often mixed.
_EXPRESSION = {'lab': (0.5, 1.0, 0.1), 'wild': (0.3, 1.0, 0.25), 'cartoon': (0.5, 1.0, 0.1),
               'lowq': (0.3, 1.0, 0.2), 'occluded': (0.3, 1.0, 0.2)}
_HAIR = ((0.08, 0.06, 0.05), (0.25, 0.15, 0.08), (0.45, 0.3, 0.15), (0.8, 0.65, 0.35),
         (0.6, 0.25, 0.1), (0.6, 0.6, 0.6))
_CARTOON_SKIN = ((1.0, 0.82, 0.62), (0.98, 0.68, 0.45), (0.72, 0.45, 0.28), (1.0, 0.88, 0.78),
                 (0.55, 0.85, 0.55), (0.6, 0.75, 1.0))
# Hair styles 0 short, 1 long, 2 bald, 3 fringe, 4 long + fringe: cumulative probabilities.
_HAIR_STYLE_CDF = (0.3, 0.55, 0.65, 0.8)
OCCLUDERS = ('glasses', 'sunglasses', 'mask', 'hand', 'fringe')
# Visibility multipliers per occluder over the regions (brows, eyes, nose, mouth).
_OCC_VIS = {'glasses': (0.95, 0.85, 1.0, 1.0), 'sunglasses': (0.7, 0.05, 0.9, 1.0),
            'mask': (1.0, 1.0, 0.3, 0.05), 'fringe': (0.1, 0.85, 1.0, 1.0),
            'hand_mouth': (1.0, 1.0, 0.6, 0.1), 'hand_eye': (0.55, 0.5, 0.9, 1.0),
            'hand_chin': (1.0, 1.0, 1.0, 0.55)}
# Region of each action (0 brows, 1 eyes, 2 nose, 3 mouth) for the annotators' visibility.
_ACTION_REGION = np.array([0, 0, 0, 1, 1, 3, 3, 3, 3, 2, 3, 3, 3])


def _sample_identity(u: list[float], domain: str) -> np.ndarray:
  """Identity vector (IDENTITY_FIELDS) from 24 uniforms."""
  t = u[4] ** 1.3
  skin = [0.98 - 0.58 * t + 0.06 * (u[5] - 0.5), 0.84 - 0.58 * t + 0.05 * (u[6] - 0.5),
          0.74 - 0.56 * t]
  eye_h, nose = -0.26 + 0.08 * u[8], 0.42 + 0.12 * u[12]
  idn = [0.9 + 0.14 * u[0], 1.12 + 0.16 * u[1], 1.2 * u[2], 0.05 + 0.25 * u[3], *skin,
         0.33 + 0.07 * u[7], eye_h, 0.9 + 0.22 * u[9], 0.17 + 0.06 * u[10], 0.04 + 0.03 * u[11],
         nose, 0.25 + 0.07 * u[13], eye_h + nose + 0.26 + 0.06 * u[14], 0.8 + 0.5 * u[15],
         float(bisect.bisect(_HAIR_STYLE_CDF, u[16])),
         *(v * (0.85 + 0.3 * u[18]) for v in _HAIR[int(u[17] * 6)])]
  if domain == 'cartoon':      # FERG-like: round heads, big eyes, saturated flat skin and hair
    idn[0] *= 1.06
    idn[1] *= 0.94
    idn[2] *= 0.3
    idn[9] *= 1.45
    idn[11] *= 1.3
    idn[13] *= 1.1
    idn[4:7] = (v * (0.92 + 0.08 * u[20]) for v in _CARTOON_SKIN[int(u[19] * 6)])
    idn[17:20] = (0.6 * u[21], 0.6 * u[22], 0.6 * (1 - u[21]))
  return np.array(idn, np.float32)


def _sample_style(rng: np.random.Generator, u: list[float], domain: str):
  """Domain-specific rendering extras, region visibility and image degradation."""
  style = {'contempt_side': 1.0 if u[0] < 0.5 else -1.0, 'gaze': (2 * u[1] - 1, 2 * u[2] - 1),
           'iris': tuple((0.05 + 0.4 * v) * (0.4 + 0.6 * u[6]) for v in u[3:6]),
           'shirt': tuple(u[7:10]), 'bg': tuple(u[10:13])}
  vis = np.ones(4, np.float32)
  degr = 0.0
  if domain == 'lab':
    style['bg'] = (0.25 + 0.6 * u[10],) * 3
  elif domain == 'wild':
    n = 5 + int(u[13] * 7)
    boxes = np.sort(rng.uniform(-0.2, 1.2, (n, 2, 2)), axis=1)   # sorted x0 < x1, y0 < y1
    cols = (rng.random((n, 3)) * 255).astype(int)
    style['clutter'] = [(k, x[0][0], x[0][1], x[1][0], x[1][1], tuple(c))
                        for k, x, c in zip(rng.integers(0, 3, n).tolist(), boxes.tolist(),
                                           cols.tolist())]
    style['light'] = (2 * math.pi * u[14], 0.25 + 0.45 * u[15], 0.3 * u[16] - 0.15)
  elif domain == 'cartoon':
    bg = [0.35 + 0.3 * v for v in u[10:13]]
    bg[int(u[13] * 3)] = 0.95
    style['bg'] = tuple(bg)
  elif domain == 'lowq':
    q = {'res': 32 + int(32 * u[13]), 'contrast': 0.4 + 0.4 * u[14], 'bright': 0.3 * u[15] - 0.15,
         'noise': 3.0 + 6.0 * u[16], 'jpeg': 10 + int(u[17] * 21), 'grey': bool(u[18] < 0.3),
         'seed': int(u[19] * 2**30)}
    style['quality'] = q
    degr = 0.25 * ((64 - q['res']) / 32 + (30 - q['jpeg']) / 20 + (q['noise'] - 3) / 6
                   + (0.8 - q['contrast']) / 0.4)
  elif domain == 'occluded':
    kinds = rng.permutation(len(OCCLUDERS))[:1 if u[13] < 0.7 else 2]
    occ = []
    for j, k in enumerate(kinds.tolist()):
      b = 14 + 9 * j
      o = {'kind': OCCLUDERS[k], 'color': tuple(u[b:b + 3]), 'u': tuple(u[b + 3:b + 7])}
      key = o['kind']
      if key == 'hand':
        o['where'] = ('mouth', 'eye', 'chin')[int(u[b + 7] * 3)]
        o['side'] = 1.0 if u[b + 8] < 0.5 else -1.0
        key = 'hand_' + o['where']
      vis *= np.array(_OCC_VIS[key], np.float32)
      occ.append(o)
    occ.sort(key=lambda o: ('mask', 'fringe', 'glasses', 'sunglasses', 'hand').index(o['kind']))
    style['occluders'] = occ
  return style, vis, float(min(max(degr, 0.0), 1.0))


def sample_params(rng: np.random.Generator, domain: str, label: int | None = None,
                  intensity: float | None = None, blend: bool | None = None) -> FaceParams:
  """Draws one face: expression (label, optional blend), intensity, identity, pose and style.

  label/intensity/blend override the random choices (blend=False: never a blend).
  """
  if domain not in DOMAINS:
    raise ValueError(f'unknown domain {domain!r}; valid domains: {DOMAINS}')
  u = rng.random(8).tolist()
  if label is None:
    label = int(u[0] * NUM_CLASSES)
  if not 0 <= label < NUM_CLASSES:
    raise ValueError(f'label {label} outside 0..{NUM_CLASSES - 1}')
  lo, hi, p_blend = _EXPRESSION[domain]
  inten = lo + (hi - lo) * float(u[1]) if intensity is None else float(intensity)
  is_blend = u[2] < p_blend if blend is None else bool(blend)
  secondary, weight = -1, 1.0
  if label == 0:
    inten, is_blend = 0.0, False
  target = PROTOTYPES[label]
  if is_blend:
    secondary = 1 + int(u[3] * (NUM_CLASSES - 2))
    secondary += secondary >= label          # any expressive class other than the label
    weight = 0.55 + 0.3 * float(u[4])
    target = weight * target + (1.0 - weight) * PROTOTYPES[secondary]
  actions = inten * target + 0.06 * rng.standard_normal(NUM_ACTIONS)
  if domain == 'cartoon':
    actions = actions * 1.25                 # exaggerated, FERG-like
  actions = np.clip(actions, -0.3, 1.4).astype(np.float32)
  identity = _sample_identity(rng.random(24).tolist(), domain)
  yaw, pitch, roll, z0, z1, sh = _POSE[domain]
  up = (rng.random(6) * 2 - 1).tolist()
  pose = np.array([yaw * up[0], pitch * up[1], roll * up[2], z0 + (z1 - z0) * (up[3] + 1) / 2,
                   sh * up[4], sh * up[5]], np.float32)
  style, vis, degr = _sample_style(rng, rng.random(32).tolist(), domain)
  if domain == 'wild':
    degr = 0.2 * abs(float(pose[0])) / 0.6
  return FaceParams(label, secondary, weight, inten, actions, identity, pose, vis, degr, style)


# ---------------------------------------------------------------------------------------------
# Annotators, valence/arousal, examples
# ---------------------------------------------------------------------------------------------
_NORM2 = (PROTOTYPES ** 2).sum(1)
_INV_NORM2 = np.where(_NORM2 > 0, 1.0 / np.maximum(_NORM2, 1e-9), 0.0)
_NOISE = {'lab': 0.1, 'wild': 0.12, 'cartoon': 0.08, 'lowq': 0.12, 'occluded': 0.1}
_NEUTRAL_GAIN, _TAU = 0.09, 0.02
# Annotator lapse rate at intensity 0 (it falls linearly to 0 at full intensity): a random
# emotion instead of the perceived one. `wild` stands in for FERPlus, whose crowd votes on
# subtle faces spread further than the perception model alone spreads them: about 90% of
# cleaned FERPlus images have votes on at most 3 emotions (paper 002, Fig. 17); `wild` had 94%
# without lapses and has 90% with them (4,000 training examples, seed 0).
_LAPSE = {'lab': 0.0, 'wild': 0.1, 'cartoon': 0.0, 'lowq': 0.0, 'occluded': 0.0}


def simulate_votes(params: FaceParams, domain: str, rng: np.random.Generator) -> np.ndarray:
  """int32 [10] vote counts of 10 annotators over (8 emotions, unknown, not-a-face).

  Each annotator sees the drawn actions through noise (more for hidden regions, which also read
  as neutral, and for degraded images), fits every class prototype at its best intensity and
  picks by Gumbel-max over the fit gains; in `wild` some lapse to a random emotion, more often
  on subtle faces (_LAPSE); some say unknown (more under occlusion, degradation
  and ambiguity) or not-a-face (degraded, occluded images).
  """
  vis_a = params.visibility[_ACTION_REGION]
  degr = params.degradation
  sigma = _NOISE[domain] * (1.0 + 1.2 * degr) + 0.2 * (1.0 - vis_a)
  mean = params.actions * vis_a * (0.8 if domain == 'cartoon' else 1.0)  # cartoon: exaggerated
  seen = np.vstack([mean, mean + sigma * rng.standard_normal((NUM_VOTES, NUM_ACTIONS))])
  dots = seen @ PROTOTYPES.T                 # row 0: the noiseless view, rows 1..10: annotators
  s = np.minimum(np.maximum(dots * _INV_NORM2, 0.0), 1.5)
  gain = s * (2.0 * dots - s * _NORM2)       # how much fitting class k reduces the residual
  gain[:, 0] = _NEUTRAL_GAIN
  top2 = np.partition(gain[0], -2)[-2:].tolist()
  choice = (gain[1:] * (1.0 / _TAU) + rng.gumbel(size=(NUM_VOTES, NUM_CLASSES))).argmax(1)
  occl = 1.0 - float(params.visibility.mean())
  p_nf = 0.003 + 0.1 * degr * degr + 0.1 * occl * degr
  p_unk = min(0.01 + 0.35 * occl + 0.2 * degr + (0.08 if top2[1] - top2[0] < 0.03 else 0.0), 0.6)
  r = rng.random(NUM_VOTES)
  # Crowd workers' lapses: a random emotion. Drawn from the same uniforms (no new draws, so
  # the example's later draws stay as they were), above the unknown / not-a-face band.
  lo, p_lapse = p_nf + p_unk, _LAPSE[domain] * (1.0 - params.intensity)
  lapse = (r >= lo) & (r < lo + p_lapse)
  choice[lapse] = ((r[lapse] - lo) / p_lapse * NUM_CLASSES).astype(np.int64) % NUM_CLASSES
  choice[r < p_nf + p_unk] = 8
  choice[r < p_nf] = 9
  return np.bincount(choice, minlength=NUM_VOTES).astype(np.int32)


def valence_arousal(params: FaceParams, rng: np.random.Generator) -> np.ndarray:
  """float32 [2] (valence, arousal): intensity x the (blended) circumplex direction + noise."""
  d = params.weight * VA_DIRECTIONS[params.label]
  if params.secondary >= 0:
    d = d + (1.0 - params.weight) * VA_DIRECTIONS[params.secondary]
  va = params.intensity * d + 0.05 * rng.standard_normal(2)
  return np.clip(va, -1.0, 1.0).astype(np.float32)


def _check(domain: str, split: str, image_size: int, seed: int) -> None:
  if domain not in DOMAINS:
    raise ValueError(f'unknown domain {domain!r}; valid domains: {", ".join(DOMAINS)}')
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; valid splits: {", ".join(SPLITS)}')
  if not isinstance(image_size, (int, np.integer)) or not 48 <= image_size <= 224:
    raise ValueError(f'image_size must be an integer in 48..224, got {image_size!r}')
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f'seed must be a non-negative integer, got {seed!r}')


def make_example(seed: int, domain: str, split: str, index: int, image_size: int = 112,
                 label: int | None = None) -> dict[str, np.ndarray]:
  """The example `index` of (seed, domain, split); see the module docstring for the keys."""
  _check(domain, split, image_size, seed)
  if index < 0:
    raise ValueError(f'index must be non-negative, got {index}')
  dom = DOMAINS.index(domain)
  # default_rng(list) hashes the list with SeedSequence: stable across runs and platforms
  rng = np.random.default_rng([seed, dom, SPLITS.index(split), index])
  params = sample_params(rng, domain, label=label)
  image, landmarks = render(params, image_size, domain)
  votes = simulate_votes(params, domain, rng)
  emo = votes[:NUM_CLASSES].astype(np.float32)
  total = emo.sum()
  if total > 0:
    dist = emo / total
  else:
    dist = np.zeros(NUM_CLASSES, np.float32)
    dist[params.label] = 1.0
  return {'image': image, 'label': np.int32(params.label), 'votes': votes, 'label_dist': dist,
          'va': valence_arousal(params, rng), 'va_mask': np.float32(1.0),
          'landmarks': landmarks, 'landmarks_mask': np.float32(1.0),
          'multilabel': (votes[:NUM_CLASSES] >= 3).astype(np.float32),
          'intensity': np.float32(params.intensity), 'identity': params.identity,
          'domain': np.int32(dom), 'index': np.int32(index)}


class SyntheticFaces:
  """grain random-access source (`__len__`, `__getitem__`) over one domain and split."""
  class_names = CANONICAL   # the names of 'label', and of 'label_dist' and 'multilabel' columns

  def __init__(self, domain: str, split: str = 'train', num_examples: int = 10000,
               image_size: int = 112, seed: int = 0):
    _check(domain, split, image_size, seed)
    if not isinstance(num_examples, (int, np.integer)) or num_examples <= 0:
      raise ValueError(f'num_examples must be a positive integer, got {num_examples!r}')
    self.domain, self.split = domain, split
    self.num_examples, self.image_size, self.seed = int(num_examples), int(image_size), int(seed)

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    if index < 0:
      index += self.num_examples
    if not 0 <= index < self.num_examples:
      raise IndexError(f'index {index} out of range for {self.num_examples} examples')
    return make_example(self.seed, self.domain, self.split, index, self.image_size)

  def labels(self) -> np.ndarray:
    """int64 [N] labels without rendering: the first draw of each example's generator decides
    its class (sample_params), so this is the label make_example returns."""
    dom, split = DOMAINS.index(self.domain), SPLITS.index(self.split)
    return np.array([int(np.random.default_rng([self.seed, dom, split, i]).random() * NUM_CLASSES)
                     for i in range(self.num_examples)], np.int64)

  def votes(self) -> np.ndarray:
    """int32 [N, 10] votes without rendering: make_example draws them from the same generator
    right after the face parameters, and rendering draws nothing from it."""
    dom, split = DOMAINS.index(self.domain), SPLITS.index(self.split)
    out = np.empty((self.num_examples, NUM_VOTES), np.int32)
    for i in range(self.num_examples):
      rng = np.random.default_rng([self.seed, dom, split, i])
      out[i] = simulate_votes(sample_params(rng, self.domain), self.domain, rng)
    return out

  def __repr__(self) -> str:
    return (f'SyntheticFaces(domain={self.domain!r}, split={self.split!r}, '
            f'num_examples={self.num_examples}, image_size={self.image_size}, seed={self.seed})')


# ---------------------------------------------------------------------------------------------
# Grid image and command line
# ---------------------------------------------------------------------------------------------
def render_grid(domain_list=DOMAINS, n_per_class: int = 1, image_size: int = 112,
                seed: int = 0) -> np.ndarray:
  """uint8 grid: one column per class (names on top), n_per_class rows per domain (named left).

  Grid faces are not blends and have intensity in [0.6, 1] so that the classes read clearly.
  """
  from PIL import Image, ImageDraw, ImageFont
  domain_list = [domain_list] if isinstance(domain_list, str) else list(domain_list)
  for dom in domain_list:
    _check(dom, 'train', image_size, seed)
  try:
    font = ImageFont.load_default(size=max(11, image_size // 9))
  except TypeError:                          # older Pillow without FreeType sizes
    font = ImageFont.load_default()
  s, pad, left, top = image_size, 2, max(70, image_size * 2 // 3), max(20, image_size // 5)
  rows = len(domain_list) * n_per_class
  grid = Image.new('RGB', (left + NUM_CLASSES * (s + pad), top + rows * (s + pad)), (255, 255, 255))
  draw = ImageDraw.Draw(grid)
  for c, name in enumerate(CLASS_NAMES):
    draw.text((left + c * (s + pad) + 3, 3), name, fill=(0, 0, 0), font=font)
  for d, dom in enumerate(domain_list):
    for i in range(n_per_class):
      row = d * n_per_class + i
      draw.text((3, top + row * (s + pad) + s // 2 - 6), dom, fill=(0, 0, 0), font=font)
      for c in range(NUM_CLASSES):
        rng = np.random.default_rng(np.random.SeedSequence([seed, DOMAINS.index(dom), 99, c, i]))
        params = sample_params(rng, dom, label=c, intensity=0.6 + 0.4 * rng.random(), blend=False)
        image, _ = render(params, s, dom)
        grid.paste(Image.fromarray(image), (left + c * (s + pad), top + row * (s + pad)))
  return np.asarray(grid)


def benchmark(image_size: int = 112, n: int = 500, repeats: int = 3,
              domains=DOMAINS) -> dict[str, float]:
  """Images per CPU-second of SyntheticFaces.__getitem__ per domain (one process, one core).

  CPU time (best of `repeats` passes over the same n examples, after a warm-up pass that fills
  the lighting and noise caches) so that other processes on the machine do not skew it.
  """
  out = {}
  for dom in domains:
    src = SyntheticFaces(dom, 'train', num_examples=n, image_size=image_size)
    best = float('inf')
    for r in range(repeats + 1):
      t = time.process_time()
      for i in range(n):
        src[i]
      if r:
        best = min(best, time.process_time() - t)
    out[dom] = n / best
  return out


def _define_flags() -> None:
  # Defined when the command runs, not on import: this module is imported everywhere, and absl
  # flags are process-global.
  flags.DEFINE_string('grid', '', 'Write a labelled grid PNG to this path.')
  flags.DEFINE_integer('size', 112, 'Image size in pixels.', lower_bound=48, upper_bound=224)
  flags.DEFINE_list('domains', list(DOMAINS), 'Comma-separated domains.')
  flags.DEFINE_integer('per_class', 1, 'Grid rows per domain.', lower_bound=1)
  flags.DEFINE_integer('seed', 0, 'Seed of the grid.')
  flags.DEFINE_boolean('bench', False, 'Print images/s per domain.')


def main(argv: list[str]) -> int:
  """The command: a labelled grid and/or the speed per domain."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  args = flags.FLAGS
  bad = [d for d in args.domains if d not in DOMAINS]
  if bad:
    raise app.UsageError(f'--domains: unknown {bad}; valid: {",".join(DOMAINS)}')
  if not (args.grid or args.bench):
    raise app.UsageError('nothing to do: pass --grid PATH and/or --bench')
  if args.grid:
    from PIL import Image
    Image.fromarray(render_grid(args.domains, args.per_class, args.size, args.seed)).save(
        args.grid)
    print(f'wrote {args.grid}')
  if args.bench:
    for dom, rate in benchmark(args.size, domains=args.domains).items():
      print(f'{dom:9s} {rate:7.0f} images/s at {args.size} px (one core)')
  return 0


def cli() -> None:
  # Imported here: ferjax.cli defines --debug, which a program importing this module as a
  # library may define itself.
  from ferjax import cli as cli_lib
  _define_flags()
  cli_lib.run(main)


if __name__ == '__main__':
  cli()
