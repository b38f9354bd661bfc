"""Inputs and outputs of `ferjax.predict`: which files to read, decoding them, and writing rows.

- `expand`: command-line inputs (files, folders read recursively, glob patterns, `@list.txt`)
  -> `Source`s in a stable order; a path that names nothing is kept as a source that fails to
  read, so it gets its own `unreadable` row.
- `read_image`: a file -> upright 8-bit RGB (ferjax.data.sources.upright_8bit: EXIF orientation,
  16-bit grey), as the dataset decoder reads training images.
- `VideoFrames`: a video's frames, decoded by PyAV one at a time (constant memory), thinned by
  `every_n` or `fps`, turned upright by the stream's display matrix.
- `RowWriter`: CSV or JSONL by the file's extension, flushed after every batch.
- `draw_overlay`: an image with its boxes and labels.
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import io
import json
import math
import os

import numpy as np

from ferjax.errors import UserError

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm',
              '.pgm')
VIDEO_EXTS = ('.mp4', '.mov', '.avi', '.webm', '.mkv', '.m4v')
OUT_EXTS = ('.csv', '.jsonl')
_GLOB_CHARS = '*?['


class ReadError(Exception):
  """A source that cannot be read; its message goes into the row."""


@dataclasses.dataclass(frozen=True)
class Source:
  path: str            # as the user wrote it, or as found under a folder / by a pattern
  kind: str            # 'image', 'video', or 'missing' (named nothing)
  why: str = ''        # for 'missing'


def is_video(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in VIDEO_EXTS


def _read_list(path: str) -> list[str]:
  try:
    with open(os.path.expanduser(path)) as f:
      lines = [line.strip() for line in f]
  except OSError as e:
    raise UserError(f'input list {path}: {e.strerror or e}') from None
  base = os.path.dirname(os.path.abspath(os.path.expanduser(path)))
  # Relative entries are relative to the list's own folder, so a list travels with its files.
  return [line if os.path.isabs(os.path.expanduser(line)) else os.path.join(base, line)
          for line in lines if line and not line.startswith('#')]


def _walk(folder: str) -> list[str]:
  found = []
  for root, dirs, files in os.walk(folder, followlinks=True):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    for name in sorted(files):
      if not name.startswith('.') and os.path.splitext(name)[1].lower() in IMAGE_EXTS + VIDEO_EXTS:
        found.append(os.path.join(root, name))
  return found


def expand(inputs: list[str], input_lists: list[str] = ()) -> list[Source]:
  """Sources in command-line order; folders and patterns in sorted order; each file once."""
  paths: list[str] = []
  for arg in inputs:
    paths.extend(_read_list(arg[1:]) if arg.startswith('@') else [arg])
  for listing in input_lists:
    paths.extend(_read_list(listing))
  sources, seen = [], set()

  def add(path, kind, why=''):
    key = os.path.normcase(os.path.abspath(os.path.expanduser(path)))
    if key not in seen:
      seen.add(key)
      sources.append(Source(path, kind, why))

  for path in paths:
    real = os.path.expanduser(path)
    if os.path.isdir(real):
      found = _walk(real)
      if not found:
        add(path, 'missing', 'a folder with no image or video file')
      for f in found:
        add(f, 'video' if is_video(f) else 'image')
    elif os.path.exists(real):
      add(path, 'video' if is_video(path) else 'image')
    elif any(c in path for c in _GLOB_CHARS):
      found = sorted(glob.glob(real, recursive=True))
      files = [f for f in found if os.path.isfile(f)]
      for f in found:
        if os.path.isdir(f):
          files.extend(_walk(f))
      if not files:
        add(path, 'missing', 'the pattern matches no file')
      for f in files:
        add(f, 'video' if is_video(f) else 'image')
    else:
      add(path, 'missing', 'no such file or folder')
  return sources


def read_image(path: str) -> np.ndarray:
  """uint8 [H, W, 3] RGB, upright and 8-bit; ReadError naming why not."""
  from PIL import Image, UnidentifiedImageError
  from ferjax.data import sources
  try:
    with open(os.path.expanduser(path), 'rb') as f:
      data = f.read()
  except OSError as e:
    raise ReadError(e.strerror or str(e)) from None
  if not data:
    raise ReadError('empty file (0 bytes)')
  try:
    with Image.open(io.BytesIO(data)) as pil:
      pil = sources.upright_8bit(pil)
      return np.asarray(pil.convert('RGB') if pil.mode != 'RGB' else pil, np.uint8)
  except UnidentifiedImageError:
    raise ReadError('not an image Pillow can read') from None
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    # Pillow raises OSError for truncated data, SyntaxError for some corrupt headers.
    raise ReadError(f'broken image: {e}') from None


def import_av():
  try:
    import av
  except ImportError:
    raise UserError("reading videos needs PyAV: pip install 'ferjax[predict]'") from None
  return av


@dataclasses.dataclass
class Frame:
  index: int           # position among all decoded frames of the video, from 0
  time: float          # seconds from the stream's start
  image: np.ndarray    # uint8 [H, W, 3] RGB


class VideoFrames:
  """Iterates a video's kept frames, one decoded at a time.

  `every_n` keeps frames 0, n, 2n...; `fps` keeps the first frame at or after each 1/fps step
  (0 = every frame). After iteration, `decoded` counts the frames read and `error` holds why
  decoding stopped early ('' when the stream ended normally). Opening or a first frame that fails
  raises ReadError.
  """

  def __init__(self, path: str, every_n: int = 1, fps: float = 0.0):
    self.path, self.every_n, self.fps = os.path.expanduser(path), max(1, int(every_n)), fps
    self.decoded, self.error = 0, ''

  def __iter__(self):
    av = import_av()
    try:
      container = av.open(self.path)
    except (av.FFmpegError, OSError, ValueError) as e:
      raise ReadError(f'not a video PyAV can open: {e}') from None
    with container:
      if not container.streams.video:
        raise ReadError('the file has no video stream')
      stream = container.streams.video[0]
      stream.thread_type = 'AUTO'   # FFmpeg's frame threads: decoding is most of a video's cost
      rate = float(stream.average_rate or stream.guessed_rate or 0) or None
      next_time = None
      frames = container.decode(stream)
      while True:
        try:
          frame = next(frames)
        except StopIteration:
          break
        except (av.FFmpegError, OSError, ValueError) as e:
          if self.decoded == 0:
            raise ReadError(f'no decodable frame: {e}') from None
          self.error = f'decoding stopped after {self.decoded} frames: {e}'
          break
        index = self.decoded
        self.decoded += 1
        t = frame.time if frame.time is not None else (index / rate if rate else math.nan)
        if self.fps > 0:
          if next_time is not None and t < next_time - 1e-6:
            continue
          next_time = (t if next_time is None else next_time) + 1.0 / self.fps
          while next_time <= t:   # a gap in the stream: the next step after this frame
            next_time += 1.0 / self.fps
        elif index % self.every_n:
          continue
        image = frame.to_ndarray(format='rgb24')
        # Phones store portrait video turned, with a display matrix: show it upright, as EXIF
        # orientation is applied to photos. `rotation` is counterclockwise degrees.
        turns = round((frame.rotation or 0) / 90) % 4
        if turns:
          image = np.ascontiguousarray(np.rot90(image, turns))
        yield Frame(index, float(t), image)
    if self.decoded == 0:
      raise ReadError('no decodable frame')


def check_out(path: str, overwrite: bool) -> str:
  """The output's format ('csv' or 'jsonl'), after refusing an existing file."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in OUT_EXTS:
    raise UserError(f'--out {path}: the extension picks the format: .csv or .jsonl')
  if os.path.exists(path) and not overwrite:
    raise UserError(f'--out {path} exists; pass --overwrite to replace it')
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    raise UserError(f'--out {path}: the folder {parent} does not exist')
  return ext[1:]


class RowWriter:
  """Rows (dicts over `columns`) to CSV or JSONL. None is an empty CSV cell / JSON null; floats
  are written with 6 significant digits."""

  def __init__(self, path: str, columns: list[str], fmt: str):
    self.columns, self.fmt = list(columns), fmt
    self._f = open(path, 'w', newline='')
    if fmt == 'csv':
      self._csv = csv.writer(self._f)
      self._csv.writerow(self.columns)

  def write(self, rows: list[dict]) -> None:
    for row in rows:
      values = [_plain(row.get(c)) for c in self.columns]
      if self.fmt == 'csv':
        self._csv.writerow(['' if v is None else v for v in values])
      else:
        self._f.write(json.dumps(dict(zip(self.columns, values))) + '\n')
    self._f.flush()

  def close(self) -> None:
    self._f.close()


def _plain(v):
  if isinstance(v, str) and not v:
    return None
  if isinstance(v, (float, np.floating)):
    v = float(v)
    return None if math.isnan(v) else float(f'{v:.6g}')
  if isinstance(v, np.integer):
    return int(v)
  return v


def overlay_name(source: str, frame: int | None, used: set[str]) -> str:
  """A file name for the overlay of one image or video frame, unique within this run."""
  stem = os.path.splitext(os.path.basename(source.rstrip('/')))[0] or 'image'
  base = stem if frame is None else f'{stem}_f{frame:06d}'
  name, n = f'{base}.jpg', 1
  while name in used:
    n += 1
    name = f'{base}_{n}.jpg'
  used.add(name)
  return name


def draw_overlay(image: np.ndarray, faces: list[dict], path: str) -> None:
  """Writes `image` with each face's box and 'class prob' label (faces: rows with x, y, w, h,
  status and, for scored faces, 'label')."""
  from PIL import Image, ImageDraw
  pil = Image.fromarray(image)
  draw = ImageDraw.Draw(pil)
  width = max(2, round(max(pil.size) / 300))
  for face in faces:
    x, y, w, h = (face[k] for k in ('x', 'y', 'w', 'h'))
    colour = (0, 220, 0) if face['status'] == 'ok' else (255, 160, 0)
    draw.rectangle([x, y, x + w, y + h], outline=colour, width=width)
    text = face.get('label') or face['status']
    left, top, right, bottom = draw.textbbox((x, y), text)
    ty = y - (bottom - top) - 4 if y - (bottom - top) - 4 >= 0 else y + h + 2
    draw.rectangle([x, ty, x + (right - left) + 4, ty + (bottom - top) + 4], fill=colour)
    draw.text((x + 2, ty + 1), text, fill=(0, 0, 0))
  pil.save(path, quality=90)
