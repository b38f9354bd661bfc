"""The prediction loop of `ferjax.predict`: sources -> faces -> crops -> batches -> rows.

Faces from all images and frames are gathered into global batches of `batch_size` crops (the
last padded), so the model always runs at one compiled shape over the whole mesh. Rows leave in
input order: a group of rows is written when its batch comes back, while the next batch is being
gathered (one batch in flight). Images are decoded and searched for faces in a few threads;
a video is decoded one frame at a time, so memory stays flat on long videos.

Statuses: `ok` (scored), `no_face` (nothing found, or no box given), `too_small` (the box's
shorter side is under `min_face` px: not scored), `unreadable` (missing, empty, broken file, a
video with no decodable frame).
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import threading

import numpy as np

from ferjax import faces as faces_lib, predict_io
from ferjax.predict_io import ReadError

STATUSES = ('ok', 'no_face', 'too_small', 'unreadable')
BASE_COLUMNS = ['path', 'frame', 'time', 'face', 'x', 'y', 'w', 'h', 'score', 'status']
# Rows waiting for one batch: bounds memory (held overlay images) when most images have no face.
MAX_ROWS_PER_GROUP_FACTOR = 4


@dataclasses.dataclass
class Options:
  faces: str = 'detect'             # 'detect', 'none' or 'boxes'
  boxes: dict | None = None         # faces.read_boxes(...) for faces='boxes'
  margin: float = 0.2
  min_face: int = 32
  batch_size: int = 64
  every_n_frames: int = 1
  fps: float = 0.0
  overlay_dir: str = ''
  threads: int = 2


def columns(class_names, outputs: dict) -> list[str]:
  """The output's columns, from the model's class names and its predictions' shapes."""
  cols = BASE_COLUMNS + list(class_names) + ['pred']
  if 'va' in outputs:
    cols += ['valence', 'arousal']
  if 'vad' in outputs:
    cols += ['valence', 'arousal', 'dominance']
  if 'landmarks' in outputs:
    n = outputs['landmarks'][1]
    cols += [f'lm{i}_{a}' for i in range(n) for a in 'xy']
  return cols + ['message']


class _Group:
  def __init__(self):
    self.rows: list[dict] = []
    self.crops: list[np.ndarray] = []
    self.crop_rows: list[int] = []          # row index of each crop
    self.squares: list[tuple] = []          # the crop's square in the image (landmarks)
    self.overlays: list[tuple] = []         # (image, file name, row indices)
    self.outputs = None                     # device arrays while in flight


class Runner:
  """Runs a model (ferjax.predict_backends) over sources and hands finished rows to
  `write(rows)`."""

  def __init__(self, model, options: Options, write, progress=None):
    self.m, self.o, self.write, self.progress = model, options, write, progress
    self.size = int(model.size)
    n = model.batch_multiple
    self.batch = max(n, -(-int(options.batch_size) // n) * n)   # whole global batches
    self.counts = collections.Counter()
    self.files = collections.Counter()        # read: 'image', 'video'
    self.unreadable = collections.Counter()   # 'image', 'video', 'missing'
    self.frames = 0
    self.cut_short: list[str] = []
    self._group, self._in_flight = _Group(), None
    self._used_names: set[str] = set()
    self._local = threading.local()

  # -- faces ------------------------------------------------------------------------------------
  def _detector(self):
    if not hasattr(self._local, 'detector'):   # OpenCV cascades are not shared across threads
      self._local.detector = faces_lib.HaarDetector()
    return self._local.detector

  def _find(self, image, path, frame):
    """The faces of one image or frame, or None when --boxes lists none for a video frame."""
    if self.o.faces == 'none':
      return faces_lib.whole_image(image)
    if self.o.faces == 'boxes':
      key = faces_lib.box_key(path)
      found = self.o.boxes.get((key, frame))
      if found is None and frame is not None:
        found = self.o.boxes.get((key, None))    # a box without a frame holds for every frame
        if found is None:
          return None
      return found or []
    return self._detector()(image)

  def _load_image(self, source):
    try:
      image = predict_io.read_image(source.path)
    except ReadError as e:
      return None, None, str(e)
    return image, self._find(image, source.path, None), ''

  # -- rows -------------------------------------------------------------------------------------
  def _add(self, path, image, found, frame=None, time=None, message=''):
    g = self._group
    base = {'path': path, 'frame': frame, 'time': time}
    first = len(g.rows)
    if not found:
      self._row(dict(base, status='no_face', message=message or (
          'no box in --boxes' if self.o.faces == 'boxes' else '')))
    for i, face in enumerate(found or []):
      row = dict(base, face=i, x=round(face.x, 1), y=round(face.y, 1), w=round(face.w, 1),
                 h=round(face.h, 1), score=face.score, message=message)
      if min(face.w, face.h) < self.o.min_face:
        self._row(dict(row, status='too_small'))
        continue
      self._row(dict(row, status='ok'))
      g.crops.append(faces_lib.crop(image, face, self.o.margin, self.size))
      g.crop_rows.append(len(g.rows) - 1)
      g.squares.append(face.square(self.o.margin))
    if self.o.overlay_dir:
      name = predict_io.overlay_name(path, frame, self._used_names)
      g.overlays.append((image, name, list(range(first, len(g.rows)))))
    if (len(g.crops) >= self.batch
        or len(g.rows) >= MAX_ROWS_PER_GROUP_FACTOR * self.batch):
      self._dispatch()

  def _row(self, row):
    self._group.rows.append(row)
    self.counts[row['status']] += 1

  def _unreadable(self, path, why, kind):
    self.unreadable[kind] += 1
    self._row({'path': path, 'status': 'unreadable', 'message': why})

  # -- batches ----------------------------------------------------------------------------------
  def _dispatch(self):
    g, self._group = self._group, _Group()
    for start in range(0, len(g.crops), self.batch):
      chunk = g.crops[start:start + self.batch]
      images = np.zeros((self.batch, self.size, self.size, 3), np.uint8)
      images[:len(chunk)] = np.stack(chunk)
      # JAX runs asynchronously: the batch computes while the next one is read.
      g.outputs = (g.outputs or []) + [self.m.submit(images)]
    previous, self._in_flight = self._in_flight, g
    if previous is not None:
      self._finish(previous)

  def _finish(self, g):
    if g.outputs:
      host = [self.m.fetch(o) for o in g.outputs]
      out = {k: np.concatenate([h[k] for h in host])[:len(g.crops)] for k in host[0]}
      self._fill(g, out)
    self.write(g.rows)
    for image, name, rows in g.overlays:
      predict_io.draw_overlay(image, [g.rows[i] for i in rows if g.rows[i].get('w')],
                              os.path.join(self.o.overlay_dir, name))

  def _fill(self, g, out):
    names = self.m.class_names
    scores = out.get('probs', out.get('multilabel'))
    for j, r in enumerate(g.crop_rows):
      row = g.rows[r]
      if scores is not None:
        s = scores[j]
        row.update(zip(names, (float(v) for v in s)))
        k = int(np.argmax(s))
        row['pred'] = names[k]
        row['label'] = f'{names[k]} {float(s[k]):.2f}'
      for key, dims in (('va', ('valence', 'arousal')),
                        ('vad', ('valence', 'arousal', 'dominance'))):
        if key in out:
          row.update(zip(dims, (float(v) for v in out[key][j])))
      if 'landmarks' in out:   # crop units [0, 1] -> pixels of the source image
        left, top, right, _ = g.squares[j]
        side = right - left
        for i, (lx, ly) in enumerate(np.asarray(out['landmarks'][j], np.float64)):
          row[f'lm{i}_x'], row[f'lm{i}_y'] = left + lx * side, top + ly * side

  # -- sources ----------------------------------------------------------------------------------
  def run(self, sources) -> None:
    if self.o.overlay_dir:
      os.makedirs(self.o.overlay_dir, exist_ok=True)
    images = [s for s in sources if s.kind == 'image']
    loaded = _ordered_map(self._load_image, images, self.o.threads)
    for source in sources:
      if source.kind == 'missing':
        self._unreadable(source.path, source.why, 'missing')
      elif source.kind == 'image':
        image, found, why = next(loaded)
        if image is None:
          self._unreadable(source.path, why, 'image')
        else:
          self.files['image'] += 1
          self._add(source.path, image, found)
      else:
        self._video(source)
      if self.progress is not None:
        self.progress.update(1)
    self._dispatch()
    self._dispatch()    # the last group is now in flight: finish it

  def _video(self, source):
    frames = predict_io.VideoFrames(source.path, self.o.every_n_frames, self.o.fps)
    # Frames are decoded here, one after another; faces are searched in the threads.
    find = lambda frame: (frame, self._find(frame.image, source.path, frame.index))
    try:
      for frame, found in _ordered_map(find, frames, self.o.threads):
        self.frames += 1
        if self.progress is not None and self.frames % 50 == 0:   # a long video moves the bar
          self.progress.set_postfix(frames=self.frames, refresh=False)
        if found is not None:
          self._add(source.path, frame.image, found, frame.index, round(frame.time, 4))
    except ReadError as e:
      self._unreadable(source.path, str(e), 'video')
      return
    self.files['video'] += 1
    if frames.error:
      self.cut_short.append(f'{source.path}: {frames.error}')


def _ordered_map(fn, items, threads):
  """fn over items in a few threads, results in order, at most 2 x threads ahead (memory)."""
  pool = concurrent.futures.ThreadPoolExecutor(max(1, threads))
  pending = collections.deque()
  it = iter(items)
  try:
    for item in it:
      pending.append(pool.submit(fn, item))
      if len(pending) >= 2 * max(1, threads):
        break
    while pending:
      result = pending.popleft().result()
      nxt = next(it, None)
      if nxt is not None:
        pending.append(pool.submit(fn, nxt))
      yield result
  finally:
    pool.shutdown(wait=False, cancel_futures=True)
