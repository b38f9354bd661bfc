"""Drawing the synthetic faces: PIL polygons on a 2x supersampled canvas, then domain effects.

`render(params, image_size, domain)` draws the geometry of `synthetic_geometry.face_points` (plus
the domain's occluders) and returns the image with the 68 landmarks projected by the very same
map, normalised to [0, 1] of the output image in (x, y) order.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from ferjax.data.synthetic_geometry import (DOMAINS, LANDMARK_ROWS, VIEW_SPAN, FaceParams,
                                            face_points)

_C24 = np.linspace(0, 2 * np.pi, 24, endpoint=False)
_CIRC24 = np.stack([np.cos(_C24), np.sin(_C24)], 1)
_ARC = np.linspace(np.pi, 2 * np.pi, 22)[1:-1]   # over the top of the head, image left to right
_INK = (20, 20, 25)
_NOISE_LEVELS = (3.0, 5.0, 7.0, 9.0)
_noise_bank = None    # list of noise images, one per level, built on first use
# lowq settings for parameters sampled for another domain (sample_params draws its own)
_QUALITY = {'res': 44, 'contrast': 0.6, 'bright': 0.0, 'noise': 5.0, 'jpeg': 20, 'grey': False,
            'seed': 0}
_light_cache: dict = {}


def _rgb(c, k: float = 1.0) -> tuple[int, int, int]:
  """Colour in [0, 1] (times k) -> 8-bit tuple; components must be non-negative."""
  k *= 255.0
  return min(255, int(c[0] * k + 0.5)), min(255, int(c[1] * k + 0.5)), min(255, int(c[2] * k + 0.5))


def _occluders(params: FaceParams) -> list[tuple[str, np.ndarray, float, bool]]:
  """Canonical geometry of glasses, sunglasses, masks, hands and hair fringes."""
  fw, flen = params.identity[0:2].tolist()
  ecx, ye, es, bgap = params.identity[7:11].tolist()
  nlen, _, ym = params.identity[12:15].tolist()
  out = []
  for k, o in enumerate(params.style.get('occluders', ())):
    kind, u, tag = o['kind'], o['u'], f'occ{k}_'
    if kind in ('glasses', 'sunglasses'):
      rx, ry = 0.2 * es + 0.05 + 0.03 * u[0], 0.13 * es + 0.04 + 0.03 * u[1]
      for sd in (-1, 1):
        out.append((f'{tag}lens{sd:+d}', _CIRC24 * (rx, ry) + (sd * ecx, ye + 0.01), 0.12, True))
      out.append((tag + 'bridge', np.array([(-ecx + rx * 0.9, ye - 0.03), (0, ye - 0.05),
                                            (ecx - rx * 0.9, ye - 0.03)]), 0.14, True))
      out.append((tag + 'temples', np.array([(-ecx - rx, ye - 0.02), (-fw * 0.98, ye + 0.02),
                                             (ecx + rx, ye - 0.02), (fw * 0.98, ye + 0.02)]),
                  0.05, False))
    elif kind == 'mask':
      top, chin = ye + nlen * (0.35 + 0.25 * u[0]), flen + 0.08
      xs = np.linspace(-1, 1, 9)
      upper = np.stack([xs * fw * 0.93, top + 0.12 * xs ** 2], 1)
      lower = np.stack([xs[::-1] * fw * (0.86 - 0.3 * xs ** 4),
                        chin - (chin - ym - 0.05) * xs ** 4], 1)
      out.append((tag + 'mask', np.concatenate([upper, lower]), 0.06, True))
      for j in range(3):
        out.append((f'{tag}pleat{j}', np.stack([xs[1:-1] * fw * 0.75,
                                                top + 0.12 + 0.14 * j + 0.05 * xs[1:-1] ** 2], 1),
                    0.07, True))
    elif kind == 'fringe':                    # hair from the crown down over the brows
      level = ye - bgap + 0.07 + 0.05 * u[0]
      xs = np.linspace(fw * 1.06, -fw * 1.06, 15)
      bottom = level + 0.04 * np.abs(np.sin(xs * 11 + 6 * u[1]))
      top = np.stack([1.08 * fw * np.cos(_ARC), np.minimum(ye - 0.02 + (ye + 1.64) * np.sin(_ARC),
                                                           level)], 1)
      out.append((tag + 'fringe', np.concatenate([top, np.stack([xs, bottom], 1)]), 0.05, True))
    elif kind == 'hand':
      sd, where = o['side'], o['where']
      across = np.pi if sd > 0 else 0.0        # fingers point across the face
      if where == 'mouth':
        cx, cy, ang, reach = sd * 0.5, ym + 0.12 + 0.1 * u[0], across + 0.25 * sd * u[3], 0.75
      elif where == 'eye':
        cx, cy, ang, reach = sd * (fw + 0.2), ye + 0.1, across - 0.2 * sd * u[3], 0.75
      else:
        cx, cy, ang, reach = sd * 0.5, flen + 0.35, -np.pi / 2 - 0.45 * sd, 0.6
      d = np.array([np.cos(ang), np.sin(ang)])
      nrm = np.array([-d[1], d[0]])
      palm = (_CIRC24 * (0.34, 0.3)) @ np.array([d, nrm]) + (cx, cy)
      out.append((tag + 'palm', palm, 0.4, False))
      for j in range(4):
        base = np.array([cx, cy]) + nrm * (0.2 * (j - 1.5)) + d * 0.1
        ln = reach * (0.8 + 0.15 * (1.5 - abs(j - 1.5)))
        out.append((f'{tag}finger{j}', np.array([base, base + d * ln]), 0.42, False))
  return out


def _canvas_size(image_size: int, domain: str, params: FaceParams) -> int:
  if domain == 'lab':
    return 96                                   # 48 px native, 2x supersampled
  if domain == 'lowq':
    return int(params.style.get('quality', _QUALITY)['res'])  # 32..64 px native, then resized
  return 2 * image_size


def render(params: FaceParams, image_size: int, domain: str) -> tuple[np.ndarray, np.ndarray]:
  """Draws one face. Returns (uint8 [S, S, 3] image, float32 [68, 2] landmarks in [0, 1] (x, y))."""
  if domain not in DOMAINS:
    raise ValueError(f'unknown domain {domain!r}; valid domains: {DOMAINS}')
  if not 48 <= image_size <= 224:
    raise ValueError(f'image_size must be in 48..224, got {image_size}')
  c = _canvas_size(image_size, domain, params)
  extra = _occluders(params) if 'occluders' in params.style else ()
  pts, groups, info = face_points(params, domain, c, extra)
  flat = pts.ravel().tolist()
  unit = c * float(params.pose[3]) / VIEW_SPAN  # canvas pixels per canonical unit
  w = lambda units: max(1, int(units * unit + 0.5))
  get = lambda name: flat[2 * groups[name][0]:2 * groups[name][1]]
  style = params.style
  cartoon = domain == 'cartoon'
  rgb, fix = _rgb, lambda t: t
  if domain == 'lowq':                         # low contrast: a tone map on every drawn colour
    q = style.get('quality', _QUALITY)
    k, b0 = q['contrast'], 128.0 * (1 - q['contrast']) + 255.0 * q['bright']
    fix = lambda t: tuple(min(255, max(0, int(k * v + b0))) for v in t)
    rgb = lambda col, f=1.0: fix(_rgb(col, f))
  ink = fix(_INK)
  idn = params.identity.tolist()
  skin, hair = idn[4:7], idn[17:20]
  img = Image.new('RGB', (c, c), rgb(style['bg']))
  d = ImageDraw.Draw(img)
  for kind, x0, y0, x1, y1, col in style.get('clutter', ()):
    box = (x0 * c, y0 * c, x1 * c, y1 * c)
    if kind == 0:
      d.rectangle(box, fill=col)
    elif kind == 1:
      d.ellipse(box, fill=col)
    else:
      d.polygon([box[0], box[3], box[2], box[3], 0.5 * (box[0] + box[2]), box[1]], fill=col)

  olw = w(0.022) if cartoon else 0

  def poly(name, col, outline=True):
    xy = get(name)
    d.polygon(xy, fill=col)
    if olw and outline:
      d.line(xy + xy[:2], fill=ink, width=olw)

  def line(name, col, width):
    d.line(get(name), fill=col, width=width)

  hstyle = int(idn[16])
  skin_col = rgb(skin)
  if hstyle in (1, 4):
    poly('hair_back', rgb(hair, 0.8))
  poly('neck', rgb(skin, 0.82))
  poly('shirt', rgb(style['shirt']))
  ear_col = rgb(skin, 0.9)
  poly('ear-1', ear_col)
  poly('ear+1', ear_col)
  poly('face', skin_col)
  wrinkles = info['wrinkles']
  wmin, ww = (0.3, w(0.018)) if cartoon else (0.05, w(0.022))
  for name, strength in wrinkles.items():
    if strength > wmin and not name.startswith('wr_under'):
      line(name, ink if cartoon else rgb(skin, 1 - 0.38 * strength), ww)
  iris_col = rgb(style.get('iris', (0.3, 0.2, 0.1)), 2.2 if cartoon else 1.0)
  lash, crease_col, lash_w = fix((25, 18, 15)), rgb(skin, 0.72), w(0.03 if cartoon else 0.024)
  for sfx in ('-1', '+1'):
    poly('eye' + sfx, fix((246, 244, 238)), False)
    poly('iris' + sfx, iris_col, False)
    poly('pupil' + sfx, fix((10, 10, 12)), False)
    if cartoon:
      gx, gy = get('glint' + sfx)
      r = w(0.02)
      d.ellipse((gx - r, gy - r, gx + r, gy + r), fill=fix((255, 255, 255)))
    d.polygon(get('cover_up' + sfx), fill=skin_col)
    d.polygon(get('cover_lo' + sfx), fill=skin_col)
    if cartoon:
      xy = get('eye' + sfx)
      d.line(xy + xy[:2], fill=ink, width=olw)
    line('lid' + sfx, lash, lash_w)
    line('crease' + sfx, crease_col, w(0.014))
    strength = wrinkles['wr_under' + sfx]
    if strength > wmin:
      line('wr_under' + sfx, ink if cartoon else rgb(skin, 1 - 0.38 * strength), ww)
    poly('brow' + sfx, rgb(hair, 0.75), False)
  line('wing', ink if cartoon else rgb(skin, 0.68), w(0.018))
  if not cartoon:
    line('bridge_line', rgb(skin, 0.88), w(0.02))
  nostril = rgb(skin, 0.35)
  poly('nostril-1', nostril, False)
  poly('nostril+1', nostril, False)
  if cartoon:
    lip = (0.85, 0.2, 0.25)
    lip_col = rgb(lip)
  else:
    lip = (skin[0] * 0.82, skin[1] * 0.52, skin[2] * 0.52)
    lip_col = rgb((lip[0] + 0.12, lip[1], lip[2] + 0.02))
  if info['gap'] * unit > 1.2:                 # open mouth: cavity and upper teeth
    poly('inner', fix((60, 12, 18)), False)
    poly('teeth', fix((240, 236, 226)), False)
  else:
    line('lip_line', rgb(lip, 0.45), w(0.016))
  poly('lip_up', lip_col, cartoon)
  poly('lip_lo', lip_col, cartoon)
  if hstyle != 2:
    poly('hair_cap', rgb(hair))
  if extra:
    _draw_occluders(d, get, style['occluders'], skin, hair, w, rgb)
  lm = (pts[LANDMARK_ROWS] + 0.5) * (1.0 / c)
  return _finish(img, image_size, domain, params), lm.astype(np.float32)


def _draw_occluders(d, get, occluders, skin, hair, w, rgb) -> None:
  for k, o in enumerate(occluders):
    tag, kind, col = f'occ{k}_', o['kind'], o['color']
    if kind in ('glasses', 'sunglasses'):
      frame = rgb(col, 0.35)
      for sd in ('-1', '+1'):
        lens = get(f'{tag}lens{sd}')
        if kind == 'sunglasses':
          d.polygon(lens, fill=rgb((0.04 + 0.1 * col[0], 0.04 + 0.1 * col[1], 0.04 + 0.1 * col[2])))
        d.line(lens + lens[:2], fill=frame, width=w(0.03), joint='curve')
      d.line(get(tag + 'bridge'), fill=frame, width=w(0.03))
      t = get(tag + 'temples')
      d.line(t[:4], fill=frame, width=w(0.025))
      d.line(t[4:], fill=frame, width=w(0.025))
    elif kind == 'mask':
      base = ((0.62, 0.8, 0.92), (0.93, 0.93, 0.93), (0.12, 0.12, 0.14), col)[int(o['u'][2] * 4)]
      d.polygon(get(tag + 'mask'), fill=rgb(base))
      for j in range(3):
        d.line(get(f'{tag}pleat{j}'), fill=rgb(base, 0.8), width=w(0.015))
    elif kind == 'fringe':
      d.polygon(get(tag + 'fringe'), fill=rgb(hair, 0.95))
    elif kind == 'hand':
      hcol = rgb(skin, 0.92 + 0.16 * float(o['u'][1]))
      edge = rgb(skin, 0.7)
      fw, e = w(0.19), w(0.012)
      for j in range(4):
        f = get(f'{tag}finger{j}')
        d.line(f, fill=edge, width=fw + 2 * e)
        r = fw / 2 + e
        d.ellipse((f[2] - r, f[3] - r, f[2] + r, f[3] + r), fill=edge)
      d.polygon(get(tag + 'palm'), fill=hcol, outline=edge)
      for j in range(4):
        f = get(f'{tag}finger{j}')
        d.line(f, fill=hcol, width=fw)
        r = fw / 2
        d.ellipse((f[2] - r, f[3] - r, f[2] + r, f[3] + r), fill=hcol)


def _noise(level: float, size: int, grey: bool, seed: int) -> Image.Image:
  """A crop of a fixed bank of Gaussian noise (mean 128), deterministic in seed."""
  global _noise_bank
  j = int(np.argmin([abs(level - v) for v in _NOISE_LEVELS]))
  if _noise_bank is None:                      # built whole, then published (thread-safe)
    _noise_bank = [Image.fromarray(np.clip(np.random.default_rng(1234 + i).normal(
        128.5, sigma, (320, 320, 3)), 0, 255).astype(np.uint8))
                   for i, sigma in enumerate(_NOISE_LEVELS)]
  ox, oy = seed % (320 - size + 1), (seed // 977) % (320 - size + 1)
  img = _noise_bank[j].crop((ox, oy, ox + size, oy + size))
  return img.getchannel(seed % 3) if grey else img


def _finish(img: Image.Image, size: int, domain: str, params: FaceParams) -> np.ndarray:
  """Downsampling and the per-domain image effects."""
  if domain == 'lab':
    img = img.reduce(2).convert('L')
    if size != 48:
      img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img.convert('RGB'))
  if domain == 'lowq':
    q = params.style.get('quality', _QUALITY)
    img = img.resize((size, size), Image.BILINEAR)
    if q['grey']:
      img = img.convert('L')
    img = ImageChops.add(img, _noise(q['noise'], size, q['grey'], q['seed']), 1.0, -128)
    buf = io.BytesIO()
    img.save(buf, 'JPEG', quality=q['jpeg'])
    buf.seek(0)
    return np.asarray(Image.open(buf).convert('RGB'))
  img = img.reduce(2)
  if domain == 'wild':
    img = ImageChops.multiply(img, _light(size, *params.style.get('light', (0.0, 0.5, 0.0))))
  return np.asarray(img)


def _light(size: int, angle: float, strength: float, cast: float) -> Image.Image:
  """Directional lighting gradient (multiplier image), quantised so that it can be cached:
  12 directions x 4 strengths x 3 colour casts per image size."""
  key = (size, int(round(angle / (2 * np.pi) * 12)) % 12, int(round((strength - 0.25) * 6)),
         int(round(cast * 6.67)))
  img = _light_cache.get(key)
  if img is None:
    ang, st, ca = key[1] * np.pi / 6, 0.25 + key[2] / 6, key[3] / 6.67
    r = (np.arange(size) + 0.5) / size - 0.5
    ramp = np.cos(ang) * r[None, :] + np.sin(ang) * r[:, None]
    tint = np.array([1.0, 1 - abs(ca), 1 - 2 * abs(ca)])
    light = (1.0 - st * (0.5 - ramp))[:, :, None] * (tint if ca >= 0 else tint[::-1])
    img = Image.fromarray((255.0 * np.clip(light, 0, 1) + 0.5).astype(np.uint8))
    if len(_light_cache) > 4000:
      _light_cache.clear()
    _light_cache[key] = img
  return img
