"""Prediction on your own photos and videos:
`python -m ferjax.predict --model RUN_DIR|BUNDLE_DIR --input PATH [PATH ...] --out preds.csv`.

Models: a training run's directory (its latest checkpoint, or --step), or an export bundle
(python -m ferjax.convert --from ferjax --in RUN_DIR --out BUNDLE_DIR [--to onnx]). --backend
auto runs a bundle that has model.onnx in ONNX Runtime when JAX would run on the CPU (faster
there), and everything else in JAX; --backend jax|onnxruntime|torch picks one.

Inputs: image files, folders (read recursively), glob patterns ('shots/**/*.jpg', quoted), a
text file listing paths (`@list.txt` or --input_list), and videos (.mp4 .mov .avi .webm .mkv),
decoded frame by frame with PyAV (--every_n_frames, --fps).

Faces: --faces detect (default) finds frontal faces with OpenCV's Haar cascade, shipped inside
opencv-python-headless (nothing is downloaded); --faces none takes each image as one cropped
face; --boxes boxes.csv takes your own boxes (`path,x,y,w,h[,frame]`, pixels of the upright
image; a box without a frame holds for every frame of a video). Each box becomes a square with
--margin of its side added on every side, resized to the model's input size; the model's own
normalisation follows, as in training.

Output: one row per face (or per image with no face): path, frame and time (videos), face, box
x,y,w,h, score (the cascade's confidence; empty for --faces none and --boxes), status (ok,
no_face, too_small, unreadable), one probability column per class in the model's order, pred,
then valence,arousal when the model predicts them, landmarks (lmI_x, lmI_y, image pixels) when
it predicts them, and message. CSV or JSONL by --out's extension; an existing --out is kept
unless --overwrite. --overlay DIR writes each image with its boxes and labels.

Bad input never stops the run; each gets a row with its status and a summary ends the run. The
exit status is 1 only when no input could be read (2 for a mistake in the command line).
Needs the `predict` extra: pip install 'ferjax[predict]'.
"""
from __future__ import annotations

import sys
import time

from absl import flags

from ferjax import cli as cli_lib
from ferjax.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string('model', None, 'Run directory (holds checkpoints/) or export bundle '
                    '(holds ferjax.json).', required=True)
flags.DEFINE_enum('backend', 'auto', ['auto', 'jax', 'onnxruntime', 'torch'],
                  'auto: onnxruntime for a bundle with model.onnx on a CPU-only machine, else '
                  'jax. onnxruntime and torch run bundles.')
flags.DEFINE_multi_string('input', [], 'Image, folder, glob pattern, video, or @LIST.txt; '
                          'repeat the flag or list several paths after it.')
flags.DEFINE_multi_string('input_list', [], 'Text file with one input path per line.')
flags.DEFINE_string('out', None, 'Output file: .csv or .jsonl.', required=True)
flags.DEFINE_string('step', None, "Checkpoint step, or 'best'; default: the latest.")
flags.DEFINE_enum('faces', 'detect', ['detect', 'none'], 'detect: find faces (OpenCV Haar '
                  'cascade); none: each image is one pre-cropped face.')
flags.DEFINE_string('boxes', '', 'CSV of your own boxes: path,x,y,w,h[,frame] (replaces '
                    'detection).')
flags.DEFINE_float('margin', 0.2, 'Added on every side of a box, as a fraction of its side.')
flags.DEFINE_integer('min_face', 32, 'Boxes whose shorter side is under this many pixels get '
                     'status too_small and no prediction.')
flags.DEFINE_integer('batch_size', 64, 'Faces per model call (rounded up to a multiple of the '
                     'device count).')
flags.DEFINE_integer('every_n_frames', 1, 'Videos: keep every n-th frame.')
flags.DEFINE_float('fps', 0.0, 'Videos: keep this many frames per second (0: use '
                   '--every_n_frames).')
flags.DEFINE_string('overlay', '', 'Folder for images with boxes and labels drawn.')
flags.DEFINE_integer('threads', 2, 'Threads decoding images and finding faces.')
flags.DEFINE_bool('overwrite', False, 'Replace an existing --out.')

EXIT_NOTHING_READ = 1


def _options(argv):
  from ferjax import faces, predict_run
  inputs = list(FLAGS.input) + list(argv[1:])   # `--input a b c`: b and c arrive as arguments
  if not inputs and not FLAGS.input_list:
    raise UserError('nothing to read: pass --input PATH [PATH ...] or --input_list FILE')
  for name in ('margin', 'fps'):
    if FLAGS[name].value < 0:
      raise UserError(f'--{name}={FLAGS[name].value}: must be >= 0')
  for name in ('batch_size', 'every_n_frames', 'threads'):
    if FLAGS[name].value < 1:
      raise UserError(f'--{name}={FLAGS[name].value}: must be >= 1')
  if FLAGS.fps and FLAGS['every_n_frames'].present:
    raise UserError('pass --fps or --every_n_frames, not both')
  if FLAGS.boxes and FLAGS['faces'].present:
    raise UserError('--boxes gives the faces: leave out --faces')
  options = predict_run.Options(
      faces='boxes' if FLAGS.boxes else FLAGS.faces,
      boxes=faces.read_boxes(FLAGS.boxes) if FLAGS.boxes else None,
      margin=FLAGS.margin, min_face=FLAGS.min_face, batch_size=FLAGS.batch_size,
      every_n_frames=FLAGS.every_n_frames, fps=FLAGS.fps, overlay_dir=FLAGS.overlay,
      threads=FLAGS.threads)
  return inputs, options


def _count(counter, kinds) -> str:
  return ', '.join(f'{counter[k]} {k}{"s" if counter[k] != 1 else ""}' for k in kinds
                   if counter[k]) or 'nothing'


def _summary(runner, out, seconds) -> str:
  read = _count(runner.files, ('image', 'video'))
  if runner.frames:
    read += f' ({runner.frames} video frames)'
  bad = _count(runner.unreadable, ('image', 'video', 'missing'))
  rows = ', '.join(f'{s} {runner.counts[s]}' for s in ('ok', 'no_face', 'too_small',
                                                        'unreadable'))
  return (f'predict: read {read}; unreadable {bad}; rows: {rows}; {seconds:.1f} s; '
          f'wrote {out}')


def _hide_read_only_notice() -> None:
  # orbax warns "Given directory is read only" whenever a checkpoint is opened to read it.
  import logging
  logging.getLogger('absl').addFilter(
      lambda record: 'is read only' not in str(record.msg))


def _check_image_only(path: str, model=None) -> None:
  """Methods that take inputs beside the image (CAFE's cached CLIP features) cannot predict
  from photos: a bundle says so before loading, a run once loaded."""
  from ferjax.interop import bundle
  method = None
  if model is not None:
    p = getattr(model, 'p', None)
    if p is not None and p.method.model_inputs is not None:
      method = p.method.name
  elif bundle.is_bundle(path):
    meta = bundle.read_meta(path)
    if meta['torch'].get('extra_inputs'):
      method = meta['method']
  if method:
    raise UserError(f'{path}: this {method} model takes inputs beside the image (e.g. cached '
                    'features); predict needs a model of the image alone')


def _cpu_run_dir(path: str) -> bool:
  import jax
  from ferjax.interop import bundle
  return not bundle.is_bundle(path) and jax.default_backend() == 'cpu'


def main(argv):
  inputs, options = _options(argv)
  from ferjax import predict_io
  fmt = predict_io.check_out(FLAGS.out, FLAGS.overwrite)
  sources = predict_io.expand(inputs, FLAGS.input_list)
  # A missing OpenCV or PyAV fails before the model loads.
  if options.faces == 'detect':
    from ferjax import faces
    faces.HaarDetector()
  if any(s.kind == 'video' for s in sources):
    predict_io.import_av()
  from ferjax import runtime
  runtime.setup()
  cli_lib.quiet_logs()
  _hide_read_only_notice()
  import jax
  from ferjax import predict_backends, predict_run
  if jax.process_count() > 1:
    raise UserError('ferjax.predict runs in one process (on every device it sees)')
  start = time.time()
  _check_image_only(FLAGS.model)
  model, _ = predict_backends.load(FLAGS.model, FLAGS.backend,
                                   cli_lib.parse_step(FLAGS.step))
  _check_image_only(FLAGS.model, model)
  runtime.say(f'predict: {FLAGS.model} on {model.description}')
  if FLAGS.backend == 'auto' and _cpu_run_dir(FLAGS.model):
    runtime.say('predict: on CPU a bundle runs faster in ONNX Runtime: python -m ferjax.convert '
                f'--from ferjax --in {FLAGS.model} --out BUNDLE_DIR --to onnx')
  writer = predict_io.RowWriter(FLAGS.out, predict_run.columns(model.class_names,
                                                               model.outputs()), fmt)
  bar = runtime.progress(total=len(sources), desc='predict', unit='file')
  try:
    runner = predict_run.Runner(model, options, writer.write, bar)
    runner.run(sources)
  finally:
    bar.close()
    writer.close()
  for line in runner.cut_short:
    runtime.say(f'warning: {line}')
  runtime.say(_summary(runner, FLAGS.out, time.time() - start))
  if not sum(runner.files.values()):
    print(f'no input could be read ({len(sources)} given)', file=sys.stderr)
    return EXIT_NOTHING_READ
  return 0


def cli() -> None:
  cli_lib.run(main)


if __name__ == '__main__':
  cli()
