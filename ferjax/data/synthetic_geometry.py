"""Face geometry for the synthetic FER benchmark: actions, identities, poses and the 68 landmarks.

Everything here lives in a canonical face frame: x to the image right, y down, the face about
2 units wide, eyes near y = -0.22, mouth near y = 0.6, chin near y = 1.2. Each drawn part is a
group of 2-D points plus a depth (a point on an ellipsoidal face surface, or a fixed depth), so
one 3-D rotation and weak-perspective projection (`face_points`) moves every drawn part and the
68 landmarks together; the landmarks are points of the very curves that are drawn.

Speed matters (the dataset renders on the fly), so the geometry is a template: every point is a
fixed linear combination of ~50 per-face scalars (`_coefs`, plain Python), and one matrix product
gives all ~700 points. Irises are whole circles; skin-coloured lid covers hide what lies outside
the lid opening.

Facial actions (loosely after FACS action units) are listed in ACTION_NAMES; each class is a
prototype vector over them (PROTOTYPES, rows in canonical class order: neutral, happy, sad,
surprise, fear, disgust, anger, contempt).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

DOMAINS = ('lab', 'wild', 'cartoon', 'lowq', 'occluded')

ACTION_NAMES = (
    'brow_raise',        # AU1+2: whole brow up, arched
    'brow_lower',        # AU4: brows down and drawn together
    'inner_brow_raise',  # AU1: inner ends up (oblique brows)
    'eye_widen',         # AU5: upper lid up (negative: drooping lids)
    'lid_tension',       # AU6/7: cheek raise, lids tightened (narrow eyes)
    'lip_corner_up',     # AU12
    'lip_corner_down',   # AU15
    'jaw_drop',          # AU25-27: mouth opens, chin moves down
    'lip_stretch',       # AU20: lips stretched sideways, thinned
    'nose_wrinkle',      # AU9
    'upper_lip_raise',   # AU10
    'lip_press',         # AU23/24: lips pressed thin
    'asym_corner',       # AU14 one-sided corner raise (side in style['contempt_side'])
)
NUM_ACTIONS = len(ACTION_NAMES)
_A = {n: i for i, n in enumerate(ACTION_NAMES)}
# Displacement per unit of action, relative to the anatomical estimates in `_coefs`. At 48-64 px
# the anatomical sizes move lines by one or two pixels, which a small CNN barely learns in a CPU
# budget; 1.4 makes apex expressions as legible as in posed datasets (the landmarks follow the
# drawn, amplified geometry; annotators judge the action vector itself).
ACTION_GAIN = 1.4


def _proto(**kw) -> list[float]:
  row = [0.0] * NUM_ACTIONS
  for k, v in kw.items():
    row[_A[k]] = v
  return row


PROTOTYPES = np.array([
    _proto(),                                                                   # neutral
    _proto(lip_corner_up=1.0, lid_tension=0.6, jaw_drop=0.12, upper_lip_raise=0.25),  # happy
    _proto(inner_brow_raise=1.0, brow_lower=0.25, lip_corner_down=1.0, eye_widen=-0.35),  # sad
    _proto(brow_raise=1.0, eye_widen=1.0, jaw_drop=1.0),                        # surprise
    _proto(brow_raise=0.55, inner_brow_raise=0.8, brow_lower=0.35, eye_widen=1.0,
           lip_stretch=1.0, jaw_drop=0.35),                                     # fear
    _proto(nose_wrinkle=1.0, upper_lip_raise=1.0, brow_lower=0.6, lid_tension=0.5,
           lip_corner_down=0.3),                                                # disgust
    _proto(brow_lower=1.0, lid_tension=0.7, eye_widen=0.3, lip_press=1.0),      # anger
    _proto(asym_corner=1.0, lid_tension=0.15),                                  # contempt
], np.float32)
NUM_CLASSES = PROTOTYPES.shape[0]

IDENTITY_FIELDS = (
    'face_width',      # half width of the face at ear level (canonical units)
    'face_length',     # chin y at rest (canonical units, eyes near -0.22)
    'jaw_square',      # 0 round .. 1.2 square jaw (superellipse exponent - 2)
    'chin_taper',      # narrowing of the jaw towards the chin
    'skin_r', 'skin_g', 'skin_b',  # skin colour in [0, 1]
    'eye_spacing',     # |x| of each eye centre
    'eye_height',      # y of the eye line
    'eye_size',        # eye scale (1 = average; cartoon about 1.45)
    'brow_gap',        # brow height above the eye line
    'brow_thickness',
    'nose_length',     # eye line to nose tip
    'mouth_width',     # half width of the mouth at rest
    'mouth_height',    # y of the mouth line at rest
    'lip_thickness',   # lip thickness scale
    'hair_style',      # 0 short, 1 long, 2 bald, 3 fringe, 4 long + fringe
    'hair_r', 'hair_g', 'hair_b',  # hair and brow colour in [0, 1]
)
NUM_IDENTITY = len(IDENTITY_FIELDS)


@dataclasses.dataclass
class FaceParams:
  """Everything needed to draw one face (and to simulate its annotators)."""
  label: int                 # canonical class index of the primary expression
  secondary: int             # secondary class of a blend, -1 when not a blend
  weight: float              # weight of the primary (1.0 when not a blend, else in [0.55, 0.85])
  intensity: float           # expression intensity in [0, 1] (0 for neutral)
  actions: np.ndarray        # float32 [NUM_ACTIONS], the drawn action vector
  identity: np.ndarray       # float32 [NUM_IDENTITY], fields IDENTITY_FIELDS
  pose: np.ndarray           # float32 [6]: yaw, pitch, roll (rad), zoom, shift x, shift y
  visibility: np.ndarray     # float32 [4]: brows, eyes, nose, mouth in [0, 1]
  degradation: float         # image degradation in [0, 1] (low quality, extreme pose)
  style: dict = dataclasses.field(default_factory=dict)  # colours, background, occluders


# ---------------------------------------------------------------------------------------------
# Template: every drawn point is a fixed linear combination of per-face scalar coefficients, so
# one matrix product gives the whole canonical geometry (the renderer's speed depends on it).
# ---------------------------------------------------------------------------------------------
class _Template:

  def __init__(self):
    self.parts, self.groups, self.n = [], {}, 0

  def add(self, name: str, xs: dict, ys: dict, dz=0.0, surface: bool = True):
    n = max(np.size(v) for v in list(xs.values()) + list(ys.values()))
    self.parts.append((self.n, n, xs, ys, np.broadcast_to(np.asarray(dz, float), (n,)), surface))
    self.groups[name] = (self.n, self.n + n)
    self.n += n

  def build(self):
    names = sorted({k for p in self.parts for d in p[2:4] for k in d} - {'one'})
    self.cols = ['one'] + names
    col = {k: i for i, k in enumerate(self.cols)}
    self.bx = np.zeros((self.n, len(self.cols)))
    self.by = np.zeros((self.n, len(self.cols)))
    self.dz = np.zeros(self.n)
    self.surf = np.zeros(self.n, bool)
    for start, n, xs, ys, dz, surface in self.parts:
      for mat, terms in ((self.bx, xs), (self.by, ys)):
        for k, v in terms.items():
          mat[start:start + n, col[k]] += v
      self.dz[start:start + n] = dz
      self.surf[start:start + n] = surface
    self.b = np.concatenate([self.bx, self.by], 0).T.copy()   # [K, 2N]


def _cat(*parts: dict) -> dict:
  """Concatenates term dicts point-wise (a coefficient missing from a part contributes 0)."""
  sizes = [max(np.size(v) for v in p.values()) for p in parts]
  keys = {k for p in parts for k in p}
  return {k: np.concatenate([np.broadcast_to(np.asarray(p.get(k, 0.0), float), (s,))
                             for p, s in zip(parts, sizes)]) for k in keys}


def _rev(d: dict) -> dict:
  return {k: np.asarray(v)[::-1] if np.ndim(v) else v for k, v in d.items()}


def _sub(d: dict, sl) -> dict:
  return {k: np.asarray(v)[sl] if np.ndim(v) else v for k, v in d.items()}


def _add(d: dict, k: str, v) -> dict:
  d = dict(d)
  d[k] = d.get(k, 0.0) + v
  return d


_CIRC16 = np.linspace(0, 2 * np.pi, 16, endpoint=False)
_CC, _CS = np.cos(_CIRC16), np.sin(_CIRC16)


def _make_template() -> tuple[_Template, np.ndarray]:
  t = _Template()
  ones = lambda n: np.ones(n)
  # face: jaw (left ear -> chin -> right ear; landmarks 0-16) then skull back over the top
  th = np.linspace(np.pi, 0.0, 33)
  c, s = np.cos(th), np.abs(np.sin(th))
  q = np.sign(c) * np.abs(c) ** 0.625
  sk = np.linspace(2 * np.pi, np.pi, 22)[1:-1]
  t.add('face', _cat({'jxe': c, 'jxet': c * s ** 6, 'jxq': q, 'jxqt': q * s ** 6},
                     {'fw': 1.02 * np.cos(sk)}),
        _cat({'ye': ones(33), 'jye': s, 'jyq': s ** 0.625}, {'ye': ones(20), 'skh': np.sin(sk)}),
        surface=False)
  e8 = np.linspace(0, 2 * np.pi, 8, endpoint=False)
  for sd in (-1, 1):
    t.add(f'ear{sd:+d}', {'fw': np.full(8, 0.97 * sd), 'one': 0.11 * np.cos(e8)},
          {'ye': ones(8), 'one': 0.13 + 0.21 * np.sin(e8)}, -0.05, False)
  t.add('neck', {'one': np.array([-0.42, 0.42, 0.5, -0.5])},
        {'one': np.array([0.7, 0.7, 2.2, 2.2])}, -0.3, False)
  t.add('shirt', {'one': np.array([-2.2, -0.5, 0, 0.5, 2.2, 2.2, -2.2])},
        {'one': np.array([1.75, 1.45, 1.75, 1.45, 1.75, 3.0, 3.0])}, -0.3, False)
  arc = sk[::-1]
  hx = np.linspace(1.02, -1.02, 13)
  kk = np.abs(hx) ** 3
  t.add('hair_cap', _cat({'fw': 1.07 * np.cos(arc)}, {'fw': hx}),
        _cat({'ye': 1 + np.sin(arc), 'one': -0.02 + 1.62 * np.sin(arc)},
             {'hl': 1 - kk, 'ye': kk, 'one': -0.02 * kk, 'wavy': 0.04 * np.abs(np.sin(9 * hx))}),
        0.03)
  t.add('hair_back', {'fw': np.array([-1.25, -1.2, 0, 0, 0, 1.2, 1.25]),
                      'one': np.array([0, 0, -0.8, 0, 0.8, 0, 0])},
        {'one': np.array([1.3, -0.6, -1.45, -1.62, -1.45, -0.6, 1.3])}, -0.4, False)

  # brows: outer -> inner along u
  u = np.linspace(0.0, 1.0, 9)
  half = (0.55 + 0.45 * u) / 2
  by = {'by0': ones(9), 'barch': -np.sin(np.pi * (0.15 + 0.8 * u)), 'blow2': u * u,
        'bin': -0.13 * u ** 1.5 + 0.025 * (1 - u)}
  blm_x, blm_y = [], []
  for sd in (-1, 1):
    bx = {f'bxo{sd:+d}': 1 - u, f'bxi{sd:+d}': u}
    t.add(f'brow{sd:+d}', _cat(bx, _rev(bx)),
          _cat(_add(by, 'bth', -half), _rev(_add(by, 'bth', half))))
    o = slice(None, None, 2) if sd < 0 else slice(None, None, -2)
    blm_x.append(_sub(bx, o))
    blm_y.append(_sub(by, o))
  t.add('brow_lm', _cat(*blm_x), _cat(*blm_y))

  # eyes: v from image left to image right
  v = np.linspace(-1.0, 1.0, 13)
  w1 = 1 - v * v
  for sd in (-1, 1):
    ex = {'ecx': np.full(13, float(sd)), 'ew': v}
    up = {'ye': ones(13), 'one': -0.012 * sd * v, 'hu': -w1 ** 0.7}
    lo = {'ye': ones(13), 'one': -0.012 * sd * v, 'hlo': w1 ** 0.85}
    t.add(f'eye{sd:+d}', _cat(ex, _rev(ex)), _cat(up, _rev(lo)))
    t.add(f'lid{sd:+d}', ex, _add(up, 'one', -0.004))
    t.add(f'crease{sd:+d}', _sub(ex, slice(2, -1)), _add(_sub(up, slice(2, -1)), 'crease', -1.0))
    t.add(f'wr_under{sd:+d}', _sub(ex, slice(3, -3)), _add(_sub(lo, slice(3, -3)), 'under', 1.0))
    # iris and pupil: whole circles; skin-coloured lid covers drawn over them hide what lies
    # outside the lid opening
    for name, r in (('iris', 'ri'), ('pupil', 'rp')):
      t.add(f'{name}{sd:+d}', {'ecx': np.full(16, float(sd)), 'gxe': np.ones(16), r: _CC},
            {'gyo': np.ones(16), r: _CS}, 0.01)
    t.add(f'glint{sd:+d}', {'ecx': np.full(1, float(sd)), 'gxe': np.ones(1), 'ri': -0.35},
          {'gyo': np.ones(1), 'ri': -0.35}, 0.01)
    t.add(f'cover_up{sd:+d}', _cat(ex, _rev(ex)), _cat(up, _rev(_add(up, 'es', -0.1))))
    t.add(f'cover_lo{sd:+d}', _cat(ex, _rev(ex)), _cat(lo, _rev(_add(lo, 'es', 0.1))))

  # nose
  t.add('bridge_lm', {'one': np.zeros(4)},
        {'ye': ones(4), 'one': -0.02 * ones(4), 'nlen': np.array([0, 0.33, 0.66, 1.0])},
        [0.04, 0.1, 0.18, 0.26])
  t.add('nbase', {'nw': np.array([-1, -0.5, 0, 0.5, 1.0])},
        {'nb': ones(5), 'one': np.array([-0.02, 0.01, 0.02, 0.01, -0.02])},
        [0.05, 0.12, 0.14, 0.12, 0.05])
  for sd in (-1, 1):
    t.add(f'nostril{sd:+d}', {'one': sd * 0.055 + 0.035 * np.cos(e8)},
          {'nb': ones(8), 'one': -0.005 + 0.018 * np.sin(e8)}, 0.12)
  t.add('wing', {'nw': np.array([-0.75, -1.05, -1, -0.5, 0.5, 1, 1.05, 0.75])},
        {'ye': np.array([1, 1, 0, 0, 0, 0, 1, 1.0]), 'nlen': np.array([1, 1, 0, 0, 0, 0, 1, 1.0]),
         'nb': np.array([0, 0, 1, 1, 1, 1, 0, 0.0]),
         'one': np.array([-0.13, -0.02, -0.02, 0.01, 0.01, -0.02, -0.02, -0.13])},
        [0.05, 0.06, 0.05, 0.12, 0.12, 0.05, 0.06, 0.05])
  t.add('bridge_line', {'one': np.array([-0.075, -0.08])},
        {'ye': ones(2), 'nlen': np.array([0, 1.0]), 'one': np.array([0.06, -0.15])}, 0.1)

  # mouth
  def mouth(u, xscale=1.0):
    neg, pos = (u < 0).astype(float), (u >= 0).astype(float)
    w = 1 - u * u
    x = {'mwl': xscale * u * neg, 'mwr': xscale * u * pos}
    mid = {'ym': np.ones_like(u), 'dyl': u * u * neg, 'dyr': u * u * pos}
    iu = dict(mid, gup=-w ** 0.9, ulp=-0.035 * w)
    il = dict(mid, glo=w ** 0.7)
    ou = dict(iu, tup=-(w ** 0.5) * (1 - 0.3 * np.exp(-(u / 0.12) ** 2)))
    ol = dict(il, tlo=w ** 0.6)
    return x, mid, iu, il, ou, ol, w

  x, mid, iu, il, ou, ol, _ = mouth(np.linspace(-1.0, 1.0, 19))
  t.add('lip_up', _cat(x, _rev(x)), _cat(ou, _rev(iu)), 0.03)
  t.add('lip_lo', _cat(x, _rev(x)), _cat(il, _rev(ol)), 0.03)
  t.add('lip_line', x, mid, 0.03)
  xi, _, iu, il, _, _, _ = mouth(np.linspace(-1.0, 1.0, 17), 0.93)
  t.add('inner', _cat(xi, _rev(xi)), _cat(iu, _rev(il)), 0.03)
  ut = np.linspace(-0.75, 0.75, 13)
  xt, _, iut, _, _, _, wt = mouth(ut, 0.93)
  t.add('teeth', _cat(xt, _rev(xt)), _cat(iut, _rev(_add(iut, 'teeth', wt ** 0.5))), 0.03)

  # expression wrinkles
  fx = np.linspace(-0.42, 0.42, 9)
  for k, off in enumerate((0.13, 0.22, 0.31)):
    t.add(f'wr_forehead{k}', {'one': fx},
          {'bmean': np.ones(9), 'one': -off - 0.03 * np.cos(3 * fx)})
  for sd in (-1, 1):
    t.add(f'wr_glabella{sd:+d}', {'one': np.array([0.045, 0.06]) * sd},
          {'bmean': ones(2), 'one': np.array([-0.04, 0.1])}, 0.02)
    m = 'r' if sd > 0 else 'l'
    t.add(f'wr_naso{sd:+d}', {'nw': np.array([sd, sd, 0, 0.0]), f'mw{m}': np.array([0, 0, 1, 1.0]),
                              'one': sd * np.array([0.02, 0.09, 0.06, 0.05])},
          {'ye': np.array([1, 0, 0, 0.0]), 'nlen': np.array([1, 0, 0, 0.0]),
           'nb': np.array([0, 1, 0, 0.0]), 'ym': np.array([0, 0, 1, 1.0]),
           f'dy{m}': np.array([0, 0, 1, 1.0]), 'one': np.array([-0.08, 0.03, -0.02, 0.08])})
  for k in range(3):
    t.add(f'wr_nose{k}', {'one': np.array([-0.06, 0.0, 0.06])},
          {'ye': ones(3), 'one': 0.04 + 0.035 * k + np.array([0, -0.01, 0])}, 0.1)
  t.build()

  g = t.groups
  r = lambda name, idx: [g[name][0] + i for i in idx]
  lm = (r('face', range(0, 33, 2)) + r('brow_lm', range(10)) + r('bridge_lm', range(4))
        + r('nbase', range(5)) + r('eye-1', [0, 4, 8, 12, 17, 21])
        + r('eye+1', [0, 4, 8, 12, 17, 21])
        + r('lip_up', [0, 3, 6, 9, 12, 15, 18]) + r('lip_lo', [22, 25, 28, 31, 34])
        + r('inner', [0, 4, 8, 12, 16, 21, 25, 29]))
  return t, np.array(lm)


TEMPLATE, LANDMARK_ROWS = _make_template()
assert len(LANDMARK_ROWS) == 68


def _coefs(p: FaceParams, cartoon: bool) -> tuple[np.ndarray, dict]:
  """Per-face template coefficients (pure Python scalars) and wrinkle/mouth drawing info."""
  br_up, br_low, br_in, widen, tense, c_up, c_down, jaw, stretch, wrinkle, ulip, press, asym = (
      (p.actions * ACTION_GAIN).tolist())
  (fw, flen, jsq, taper, _, _, _, ecx, ye, es, bgap, bth, nlen, mw, ym, lth, hstyle) = (
      p.identity[:17].tolist())
  pos = lambda z: z if z > 0.0 else 0.0
  clip01 = lambda z: 0.0 if z < 0.0 else (1.0 if z > 1.0 else z)
  opening = 0.3 * pos(jaw) + 0.03 * pos(stretch)
  chin = flen + 0.75 * opening
  al = clip01(jsq / 1.2)
  k = {'one': 1.0, 'fw': fw, 'ye': ye, 'skh': ye + 1.5,
       'jxe': fw * (1 - al), 'jxet': -fw * (1 - al) * taper, 'jxq': fw * al,
       'jxqt': -fw * al * taper, 'jye': (chin - ye) * (1 - al), 'jyq': (chin - ye) * al,
       'hl': -0.62 if hstyle in (3, 4) else -0.98, 'wavy': 1.0 if hstyle in (3, 4) else 0.0}
  # brows
  bxi = max(0.07, ecx - 0.19 * es - 0.04 * br_low)
  k.update({'bxo-1': -(ecx + 0.2 * es), 'bxo+1': ecx + 0.2 * es, 'bxi-1': -bxi, 'bxi+1': bxi,
            'by0': ye - bgap - 0.13 * br_up + 0.075 * br_low + 0.02 * tense,
            'barch': 0.045 * (1 + 0.8 * br_up), 'blow2': 0.05 * br_low, 'bin': br_in, 'bth': bth,
            'bmean': ye - bgap - 0.13 * br_up + 0.075 * br_low})
  # eyes
  hu = max(0.012, 0.075 * es * (1 + 0.85 * widen - 0.45 * tense))
  hlo = max(0.008, 0.045 * es * (1 + 0.25 * widen - 0.75 * tense))
  ri = (0.085 if cartoon else 0.064) * es
  gx, gy = p.style.get('gaze', (0.0, 0.0))
  k.update({'ri': ri, 'rp': 0.42 * ri, 'gxe': 0.25 * 0.17 * es * gx, 'gyo': ye - 0.008 + 0.01 * gy,
            'es': es})
  k.update({'ecx': ecx, 'ew': 0.17 * es, 'hu': hu, 'hlo': hlo,
            'crease': 0.035 * es * (1 - 0.4 * pos(widen)), 'under': 0.035 + 0.02 * (1 - tense)})
  # nose
  k.update({'nlen': nlen, 'nb': ye + nlen + 0.07 - 0.04 * wrinkle - 0.03 * ulip,
            'nw': 0.14 * (1 + 0.18 * wrinkle + 0.08 * ulip)})
  # mouth
  side = p.style.get('contempt_side', 1.0)
  dy = -0.12 * c_up + 0.085 * c_down + 0.015 * stretch + 0.01 * jaw
  mwx = mw * (1 + 0.2 * c_up - 0.06 * c_down + 0.32 * stretch - 0.1 * press
              - 0.18 * pos(jaw - 0.3) + 0.04 * wrinkle)
  dyl = dyr = dy
  mwl = mwr = mwx
  if side > 0:
    dyr, mwr = dy - 0.12 * asym, mwx + 0.045 * asym
  else:
    dyl, mwl = dy - 0.12 * asym, mwx + 0.045 * asym
  gup, glo = 0.3 * opening + 0.045 * pos(ulip), 0.7 * opening
  gap = gup + glo + 0.035 * pos(ulip)
  k.update({'ym': ym, 'dyl': dyl, 'dyr': dyr, 'mwl': mwl, 'mwr': mwr, 'gup': gup, 'glo': glo,
            'ulp': pos(ulip), 'teeth': min(0.055, 0.8 * gap),
            'tup': 0.05 * lth * max(0.25, 1 - 0.65 * press - 0.3 * stretch - 0.25 * c_up),
            'tlo': 0.07 * lth * max(0.25, 1 - 0.6 * press - 0.3 * stretch - 0.15 * c_up)})
  wr = {'wr_forehead0': clip01(1.2 * br_up - 0.2 + 0.6 * br_in),
        'wr_forehead1': clip01(1.2 * br_up - 0.2), 'wr_forehead2': clip01(1.2 * br_up - 0.3),
        'wr_glabella-1': clip01(1.3 * br_low - 0.2), 'wr_glabella+1': clip01(1.3 * br_low - 0.2),
        'wr_naso-1': clip01(0.25 + 0.7 * c_up + 0.6 * wrinkle + 0.4 * ulip
                            + 0.6 * asym * (side < 0)),
        'wr_naso+1': clip01(0.25 + 0.7 * c_up + 0.6 * wrinkle + 0.4 * ulip
                            + 0.6 * asym * (side > 0)),
        'wr_under-1': clip01(1.2 * tense - 0.1), 'wr_under+1': clip01(1.2 * tense - 0.1)}
  for j in range(3):
    wr[f'wr_nose{j}'] = clip01(1.3 * wrinkle - 0.15)
  info = {'wrinkles': wr, 'gap': gap}
  return np.array([k[c] for c in TEMPLATE.cols]), info


VIEW_SPAN = 3.3   # canonical units across the image at zoom 1


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
  """Rz(roll) @ Rx(pitch) @ Ry(yaw) as a [3, 3] array."""
  cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
  cr, sr = math.cos(roll), math.sin(roll)
  # rows of Rx @ Ry
  a = (cy, 0.0, sy)
  b = (sp * sy, cp, -sp * cy)
  c = (-cp * sy, sp, cp * cy)
  return np.array([[cr * a[0] - sr * b[0], cr * a[1] - sr * b[1], cr * a[2] - sr * b[2]],
                   [sr * a[0] + cr * b[0], sr * a[1] + cr * b[1], sr * a[2] + cr * b[2]], c])


def project_points(p3: np.ndarray, pose, canvas: float) -> np.ndarray:
  """[N, 3] canonical points -> [N, 2] canvas pixels (yaw, pitch, roll, weak perspective)."""
  yaw, pitch, roll, zoom, tx, ty = pose.tolist() if hasattr(pose, 'tolist') else pose
  q = p3 @ rotation(yaw, pitch, roll).T
  s = canvas * zoom / VIEW_SPAN
  f = (10.0 * s) / (10.0 - q[:, 2:3])
  return q[:, :2] * f + (canvas * (0.5 + tx), canvas * (0.5 + ty) - 0.33 * s)


_BASE_DZ, _BASE_SURF = TEMPLATE.dz, TEMPLATE.surf.astype(float)


def face_points(p: FaceParams, domain: str, canvas: float,
                extra: list[tuple[str, np.ndarray, float, bool]] = ()
                ) -> tuple[np.ndarray, dict, dict]:
  """Projects the face (plus `extra` groups: name, [n, 2] canonical points, depth, on-surface).

  Returns ([N, 2] canvas points, {group: (start, end)}, drawing info). The landmarks are the rows
  LANDMARK_ROWS of the returned points.
  """
  coef, info = _coefs(p, domain == 'cartoon')
  xy = (coef @ TEMPLATE.b).reshape(2, -1).T
  groups, dz, surf = TEMPLATE.groups, _BASE_DZ, _BASE_SURF
  if extra:
    groups, n = dict(groups), TEMPLATE.n
    parts, dzs, surfs = [xy], [dz], [surf]
    for name, pts, d, on_surface in extra:
      parts.append(pts)
      dzs.append(np.full(len(pts), d))
      surfs.append(np.full(len(pts), float(on_surface)))
      groups[name] = (n, n + len(pts))
      n += len(pts)
    xy, dz, surf = np.concatenate(parts), np.concatenate(dzs), np.concatenate(surfs)
  fw = float(p.identity[0])
  nx = xy[:, 0] * (1 / (1.15 * fw))
  ny = (xy[:, 1] - 0.1) * (1 / 1.7)
  z = dz + surf * (0.75 * np.sqrt(np.maximum(1.0 - nx * nx - ny * ny, 0.02)))
  return project_points(np.column_stack([xy, z]), p.pose, canvas), groups, info
