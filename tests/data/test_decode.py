"""Image decoding: 16-bit images are scaled to 8 bits and EXIF orientation is applied, alike
when a prepared image is read (sources.decode_image) and when prepare converts or crops one
(tfds_builder.encode_image)."""
import io
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

from ferjax.data import prepare, sources, tfds_builder


def _encoded(pil, fmt: str, **kwargs) -> bytes:
  buf = io.BytesIO()
  pil.save(buf, format=fmt, **kwargs)
  return buf.getvalue()


def _gradient16() -> tuple[np.ndarray, np.ndarray]:
  """(uint16 [8, 256] horizontal gradient over the full 16-bit range, its 8-bit expectation)."""
  expected = np.tile(np.arange(256, dtype=np.uint8), (8, 1))
  return expected.astype(np.uint16) * 257, expected   # 255 * 257 = 65535


def _oriented_jpeg(orientation: int) -> bytes:
  """A 40x24 JPEG (quadrants of different colours) tagged with an EXIF orientation."""
  rgb = np.zeros((24, 40, 3), np.uint8)
  rgb[:12, :20], rgb[:12, 20:], rgb[12:, :20], rgb[12:, 20:] = (
      (250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 250))
  exif = Image.Exif()
  exif[0x0112] = orientation
  return _encoded(Image.fromarray(rgb), 'JPEG', quality=95, exif=exif)


@pytest.mark.parametrize('fmt', ['PNG', 'TIFF', 'PPM'])
def test_16bit_grey_is_scaled_not_saturated(fmt):
  wide, expected = _gradient16()
  data = _encoded(Image.fromarray(wide), fmt)
  mode = Image.open(io.BytesIO(data)).mode          # PNG, TIFF: 'I;16'; PPM: 'I'
  assert mode == 'I' or mode.startswith('I;16')
  image, size = sources.decode_image(data, None)
  assert size == (256, 8) and image.shape == (8, 256, 3) and image.dtype == np.uint8
  for c in range(3):
    np.testing.assert_array_equal(image[..., c], expected)
  # In between values round to the nearest 8-bit level: v / 257.
  odd = np.array([[0, 128, 129, 385, 65406, 65407, 65535]], np.uint16)
  image, _ = sources.decode_image(_encoded(Image.fromarray(odd), fmt), None)
  np.testing.assert_array_equal(image[0, :, 0], [0, 0, 1, 1, 254, 255, 255])


def test_16bit_images_prepare_to_the_same_8bit_pixels():
  """A PNG is stored as it is and scaled when read; a TIFF is converted when prepared; crops are
  made from the scaled image. All read back alike."""
  wide, expected = _gradient16()
  for fmt in ('PNG', 'TIFF'):
    data, _ = tfds_builder.encode_image(_encoded(Image.fromarray(wide), fmt), 'test')
    image, _ = sources.decode_image(data, None)
    np.testing.assert_array_equal(image[..., 0], expected)
    data, (x0, y0) = tfds_builder.encode_image(_encoded(Image.fromarray(wide), fmt), 'test',
                                               crop=(100, 2, 50, 4))
    image, size = sources.decode_image(data, None)
    assert (x0, y0) == (100, 2) and size == (50, 4)
    np.testing.assert_array_equal(image[..., 0], expected[2:6, 100:150])


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_is_applied(orientation):
  data = _oriented_jpeg(orientation)
  upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert('RGB')
  image, size = sources.decode_image(data, None)
  assert size == upright.size
  assert size == ((40, 24) if orientation < 5 else (24, 40))   # 5..8 swap width and height
  np.testing.assert_array_equal(image, np.asarray(upright))
  resized, _ = sources.decode_image(data, 16)
  np.testing.assert_array_equal(
      resized, np.asarray(upright.resize((16, 16), Image.Resampling.BILINEAR)))


@pytest.mark.parametrize('orientation', [3, 6, 8])
def test_exif_orientation_at_prepare_time(orientation):
  """A JPEG is stored byte for byte (turned when read); a crop is cut from the upright image
  and stored without the tag, so it is not turned a second time; a TIFF is converted upright."""
  data = _oriented_jpeg(orientation)
  upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert('RGB'))
  stored, _ = tfds_builder.encode_image(data, 'test')
  assert stored == data
  h, w = upright.shape[:2]
  crop = (w // 4, h // 4, w // 2, h // 2)
  stored, (x0, y0) = tfds_builder.encode_image(data, 'test', crop=crop)
  image, size = sources.decode_image(stored, None)
  assert (x0, y0) == crop[:2] and size == crop[2:]
  want = Image.fromarray(upright[y0:y0 + h // 2, x0:x0 + w // 2])   # re-encoded as JPEG q95
  np.testing.assert_array_equal(image, sources.decode_image(_encoded(want, 'JPEG', quality=95),
                                                            None)[0])
  exif = Image.Exif()
  exif[0x0112] = orientation
  tiff = _encoded(Image.open(io.BytesIO(data)).convert('RGB'), 'TIFF', exif=exif)
  stored, _ = tfds_builder.encode_image(tiff, 'test')
  assert Image.open(io.BytesIO(stored)).format == 'PNG'
  image, _ = sources.decode_image(stored, None)
  np.testing.assert_array_equal(image, upright)


def test_prepared_folder_reads_16bit_and_oriented_images(tmp_path):
  wide, expected = _gradient16()
  d = tmp_path / 'raw' / 'train' / 'happy'
  os.makedirs(d)
  Image.fromarray(wide).save(d / 'a16.png')
  Image.fromarray(wide).save(d / 'b16.tif')
  (d / 'c_rotated.jpg').write_bytes(_oriented_jpeg(6))
  out = str(tmp_path / 'tfds')
  prepare.prepare('folder', str(tmp_path / 'raw'), out, progress=False)
  src = sources.PreparedSource('folder', 'train', out, image_size=32)
  items = {src[i]['key']: src[i]['image'] for i in range(len(src))}
  want = np.asarray(Image.fromarray(expected).convert('RGB').resize(
      (32, 32), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(items['train/happy/a16.png'], want)
  np.testing.assert_array_equal(items['train/happy/b16.tif'], want)
  rotated = (d / 'c_rotated.jpg').read_bytes()
  np.testing.assert_array_equal(items['train/happy/c_rotated.jpg'],
                                sources.decode_image(rotated, 32)[0])
  upright = ImageOps.exif_transpose(Image.open(d / 'c_rotated.jpg')).convert('RGB')
  np.testing.assert_array_equal(items['train/happy/c_rotated.jpg'], np.asarray(
      upright.resize((32, 32), Image.Resampling.BILINEAR)))
