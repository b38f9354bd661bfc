"""`ferjax.predict` on images and videos made here: synthetic faces pasted on noisy backgrounds,
a blank image, broken files, a short mp4 written with PyAV and a video that is not one.

The probabilities are checked against an independent path: the box from the output, cropped by
hand, run through `inference.load(...)`'s predict step."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip('cv2')
pytest.importorskip('av')

from ferjax import inference, sharding, trainer  # noqa: E402
from ferjax.data import synthetic  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.test_train import smoke  # noqa: E402

BASE = ['path', 'frame', 'time', 'face', 'x', 'y', 'w', 'h', 'score', 'status']
MIN_FACE = 60     # the 40 px face is too small, the 80-120 px ones are not
FPS = 10


def _face(index, size):
  image = synthetic.make_example(0, 'lab', 'test', index, 112)['image']
  return np.asarray(Image.fromarray(image).convert('RGB').resize((size, size)))


def _scene(seed, shape, placed):
  """A noisy background with faces pasted: placed = [(example index, size, x, y)]."""
  image = np.random.default_rng(seed).integers(90, 170, shape + (3,)).astype(np.uint8)
  for index, size, x, y in placed:
    image[y:y + size, x:x + size] = _face(index, size)
  return image


def _write_video(path, frames):
  import av
  with av.open(str(path), 'w') as container:
    stream = container.add_stream('libx264', rate=FPS)
    stream.width, stream.height, stream.pix_fmt = 320, 240, 'yuv420p'
    for i in range(frames):
      image = _scene(i, (240, 320), [(i % 3, 80, 60 + 4 * i, 50)])
      for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('predict_run') / 'run'
  trainer.train(smoke(**{'train.max_steps': 2, 'data.eval_sets': ''}), str(workdir))
  return workdir


@pytest.fixture(scope='module')
def predictor(run_dir):
  return inference.load(str(run_dir))


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
  d = tmp_path_factory.mktemp('inputs')
  Image.fromarray(_scene(1, (480, 640), [(0, 120, 100, 80)])).save(d / 'one.jpg', quality=95)
  Image.fromarray(_scene(2, (480, 640), [(2, 120, 60, 60), (5, 120, 400, 260)])).save(
      d / 'two.png')
  Image.fromarray(_scene(3, (240, 320), [(0, 40, 100, 80)])).save(d / 'tiny.png')
  Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(d / 'blank.png')
  (d / 'empty.jpg').write_bytes(b'')
  data = (d / 'one.jpg').read_bytes()
  (d / 'truncated.jpg').write_bytes(data[:len(data) // 2])
  (d / 'sub').mkdir()
  Image.fromarray(_scene(4, (240, 320), [(3, 100, 100, 60)])).save(d / 'sub' / 'deep.jpg')
  (d / 'notes.txt').write_text('not an input: folders are read for images and videos')
  _write_video(d / 'clip.mp4', 10)
  (d / 'broken.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42' + bytes(range(256)) * 8)
  return d


def _predict(run_dir, *args):
  cmd = [sys.executable, '-m', 'ferjax.predict', f'--model={run_dir}', *map(str, args)]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


def _read(path):
  if str(path).endswith('.jsonl'):
    rows = [json.loads(line) for line in open(path)]
    return list(rows[0]), rows
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  return list(rows[0]), rows


def _by_file(rows):
  out = {}
  for row in rows:
    out.setdefault(os.path.basename(row['path']), []).append(row)
  return out


@pytest.fixture(scope='module')
def detected(run_dir, inputs, tmp_path_factory):
  out = tmp_path_factory.mktemp('out')
  r = _predict(run_dir, f'--input={inputs}', inputs / 'missing.jpg', f'--out={out}/preds.csv',
               f'--overlay={out}/overlay', f'--min_face={MIN_FACE}', '--every_n_frames=3',
               '--batch_size=4')
  assert r.returncode == 0, r.stderr
  header, rows = _read(out / 'preds.csv')
  return r, header, rows, out


def test_every_input_gets_its_status_row(detected):
  r, _, rows, _ = detected
  files = _by_file(rows)
  status = lambda name: [row['status'] for row in files[name]]
  assert status('one.jpg') == ['ok'] and status('two.png') == ['ok', 'ok']
  assert status('deep.jpg') == ['ok']   # folders are read recursively
  assert status('tiny.png') == ['too_small'] and float(files['tiny.png'][0]['w']) < MIN_FACE
  assert status('blank.png') == ['no_face']
  for name in ('empty.jpg', 'truncated.jpg', 'broken.mp4', 'missing.jpg'):
    assert status(name) == ['unreadable'], name
  assert 'notes.txt' not in files
  assert '0 bytes' in files['empty.jpg'][0]['message']
  assert 'truncated' in files['truncated.jpg'][0]['message']
  assert 'rows: ok 8, no_face 1, too_small 1, unreadable 4' in r.stderr
  assert 'read 5 images, 1 video (4 video frames)' in r.stderr


def test_the_header_names_the_classes_in_the_models_order(detected, predictor):
  _, header, rows, _ = detected
  names = list(predictor.class_names)
  assert header[:len(BASE)] == BASE
  assert header[len(BASE):] == names + ['pred', 'valence', 'arousal', 'message']
  for row in rows:
    if row['status'] == 'ok':
      probs = np.array([float(row[c]) for c in names])
      assert probs.sum() == pytest.approx(1.0, abs=1e-4)
      assert row['pred'] == names[int(np.argmax(probs))]
      assert -1 <= float(row['valence']) <= 1 and float(row['score']) > 0
    else:
      assert row['pred'] == '' and row[names[0]] == ''


def _hand_crop(image, x, y, w, h, margin, size):
  """The square around the box (margin x side on every side), black outside, bilinear."""
  side = max(w, h) * (1 + 2 * margin)
  left, top = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
  n = int(round(side))
  padded = np.zeros((image.shape[0] + 2 * n, image.shape[1] + 2 * n, 3), np.uint8)
  padded[n:n + image.shape[0], n:n + image.shape[1]] = image
  square = padded[top + n:top + 2 * n, left + n:left + 2 * n]
  return np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR))


def _model_probs(predictor, crops):
  n = predictor.mesh.size
  images = np.zeros((n,) + crops[0].shape, np.uint8)
  images[:len(crops)] = crops
  out = predictor(sharding.to_global({'image': images}, predictor.mesh))
  return np.asarray(out['probs'])[:len(crops)], np.asarray(out['va'])[:len(crops)]


def test_probabilities_are_the_predict_step_on_the_same_crop(detected, predictor, inputs):
  _, _, rows, _ = detected
  names, size = list(predictor.class_names), predictor.cfg.data.image_size
  picked = [row for row in rows if row['status'] == 'ok' and row['frame'] == ''][:4]
  crops = []
  for row in picked:
    image = np.asarray(Image.open(row['path']).convert('RGB'))
    crops.append(_hand_crop(image, *(float(row[k]) for k in 'xywh'), 0.2, size))
  probs, va = _model_probs(predictor, crops)
  for row, p, v in zip(picked, probs, va):
    np.testing.assert_allclose([float(row[c]) for c in names], p, rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose([float(row['valence']), float(row['arousal'])], v, atol=2e-6)


def test_video_rows_carry_frame_and_time(detected):
  _, _, rows, _ = detected
  clip = _by_file(rows)['clip.mp4']
  assert [int(row['frame']) for row in clip] == [0, 3, 6, 9]
  assert [float(row['time']) for row in clip] == pytest.approx([0.0, 0.3, 0.6, 0.9])
  assert all(row['status'] == 'ok' for row in clip)
  assert abs(float(clip[0]['x']) - 60) < 15   # where the face was pasted in frame 0


def test_video_frames_are_thinned_by_count_or_rate(inputs):
  from ferjax import predict_io
  kept = lambda **kw: [f.index for f in predict_io.VideoFrames(inputs / 'clip.mp4', **kw)]
  assert kept() == list(range(10))
  assert kept(every_n=4) == [0, 4, 8]
  assert kept(fps=5) == [0, 2, 4, 6, 8]
  assert kept(fps=3) == [0, 4, 7]      # the first frame at or after each 1/3 s
  with pytest.raises(predict_io.ReadError, match='PyAV'):
    list(predict_io.VideoFrames(inputs / 'broken.mp4'))


def test_a_turned_video_is_read_upright(tmp_path):
  import av
  from ferjax import predict_io
  image = np.zeros((120, 160, 3), np.uint8)
  image[:20, :40] = 255    # a white patch at the stored frame's top left
  with av.open(str(tmp_path / 'portrait.mp4'), 'w') as container:
    stream = container.add_stream('libx264', rate=FPS)
    stream.width, stream.height, stream.pix_fmt = 160, 120, 'yuv420p'
    stream.set_display_rotation(-90)   # as a phone held upright stores it: shown turned right
    for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
      container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  frame = next(iter(predict_io.VideoFrames(tmp_path / 'portrait.mp4'))).image
  assert frame.shape == (160, 120, 3)
  assert frame[:40, -20:].mean() > 200 and frame[-40:, :20].mean() < 50   # now top right


def test_overlays_are_written_per_image_and_frame(detected, inputs):
  out = detected[3] / 'overlay'
  names = sorted(os.listdir(out))
  assert {'one.jpg', 'two.jpg', 'blank.jpg', 'tiny.jpg', 'clip_f000003.jpg'} <= set(names)
  assert not any(n.startswith(('empty', 'truncated', 'broken')) for n in names)
  drawn = np.asarray(Image.open(out / 'two.jpg'))
  assert drawn.shape == (480, 640, 3)
  assert not np.array_equal(drawn, np.asarray(Image.open(inputs / 'two.png')))


def test_own_boxes_lists_patterns_and_jsonl(run_dir, inputs, detected, tmp_path):
  _, _, rows, _ = detected
  one = _by_file(rows)['one.jpg'][0]
  (tmp_path / 'list.txt').write_text(f'# my photos\n{inputs}/one.jpg\n{inputs}/tiny.png\n')
  boxes = tmp_path / 'boxes.csv'
  boxes.write_text('path,x,y,w,h,frame\n'
                   f'{inputs}/one.jpg,{one["x"]},{one["y"]},{one["w"]},{one["h"]},\n'
                   f'{inputs}/tiny.png,100,80,20,20,\n'
                   f'{inputs}/clip.mp4,68,50,80,80,4\n')
  out = tmp_path / 'preds.jsonl'
  r = _predict(run_dir, f'--input=@{tmp_path}/list.txt', f'{inputs}/*.mp4',
               f'{inputs}/blank.png', f'--boxes={boxes}', f'--out={out}')
  assert r.returncode == 0, r.stderr
  _, got = _read(out)
  files = _by_file(got)
  assert [row['status'] for row in files['one.jpg']] == ['ok']
  assert files['one.jpg'][0]['score'] is None    # a user's box has no detection score
  for c in ('neutral', 'happy', 'anger', 'valence'):   # same box -> same crop -> same numbers
    assert files['one.jpg'][0][c] == pytest.approx(float(one[c]), abs=2e-6)
  assert [row['status'] for row in files['tiny.png']] == ['too_small']
  assert [(row['frame'], row['status']) for row in files['clip.mp4']] == [(4, 'ok')]
  assert files['clip.mp4'][0]['time'] == pytest.approx(0.4)
  assert [row['status'] for row in files['broken.mp4']] == ['unreadable']
  assert files['blank.png'][0]['status'] == 'no_face'
  assert files['blank.png'][0]['message'] == 'no box in --boxes'


def test_images_are_read_upright_and_8_bit(tmp_path):
  from ferjax import predict_io
  upright = _scene(5, (60, 80), [(0, 40, 20, 10)])
  exif = Image.Exif()
  exif[0x0112] = 6    # stored turned: the viewer rotates 90 degrees clockwise
  Image.fromarray(np.rot90(upright, 1).copy()).save(tmp_path / 'turned.png', exif=exif)
  np.testing.assert_array_equal(predict_io.read_image(tmp_path / 'turned.png'), upright)
  wide = np.array([[0, 257, 65535]], np.uint16)
  Image.fromarray(wide).save(tmp_path / 'grey16.png')
  got = predict_io.read_image(tmp_path / 'grey16.png')
  assert got.dtype == np.uint8 and got.shape == (1, 3, 3)
  np.testing.assert_array_equal(got[0, :, 0], [0, 1, 255])


def test_faces_none_scores_each_image_whole(predictor, tmp_path):
  from ferjax import predict_backends, predict_io, predict_run
  size = predictor.cfg.data.image_size
  paths = []
  for i in range(3):
    paths.append(tmp_path / f'crop{i}.png')
    Image.fromarray(_face(i, size)).save(paths[-1])
  written = []
  runner = predict_run.Runner(predict_backends.JaxModel(predictor),
                              predict_run.Options(faces='none', margin=0.0, batch_size=2),
                              written.extend)
  runner.run(predict_io.expand([str(tmp_path)]))
  assert [row['status'] for row in written] == ['ok'] * 3
  assert all((row['x'], row['y'], row['w'], row['h']) == (0, 0, size, size) for row in written)
  probs, _ = _model_probs(predictor, [_face(i, size) for i in range(3)])
  got = np.array([[row[c] for c in predictor.class_names] for row in written])
  np.testing.assert_allclose(got, probs, rtol=1e-5, atol=1e-7)


def test_exit_codes_and_refusing_to_overwrite(run_dir, inputs, tmp_path):
  out = tmp_path / 'preds.csv'
  r = _predict(run_dir, f'--input={inputs}/empty.jpg', f'{inputs}/broken.mp4', f'--out={out}')
  assert r.returncode == 1 and 'no input could be read' in r.stderr
  _, rows = _read(out)
  assert [row['status'] for row in rows] == ['unreadable', 'unreadable']
  before = out.read_bytes()
  r = _predict(run_dir, f'--input={inputs}/one.jpg', f'--out={out}')
  assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith('error: ')
  assert '--overwrite' in r.stderr and out.read_bytes() == before
  r = _predict(run_dir, f'--input={inputs}/one.jpg', f'--out={tmp_path}/preds.txt')
  assert r.returncode == 2 and '.csv or .jsonl' in r.stderr
