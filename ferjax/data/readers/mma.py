"""MMA Facial Expression (Kaggle `mahmoudima/mma-facial-expression`): class folders per split.

Layout:

  <manual_dir>/MMAFEDB/{train,valid,test}/{angry,disgust,fear,happy,neutral,sad,surprise}/*.jpg

manual_dir may also be the MMAFEDB folder itself. Images are 48x48; the split 'val' reads
`valid/`. Counts: train 92,968, valid 17,356, test 17,356.

Warning, FER2013 overlap: the 3-channel part of each split (28,709 / 3,589 / 3,589 images)
has exactly FER2013's split sizes, so MMA very likely contains FER2013. Do not train on one
and report on the other as a cross-dataset result without first checking for duplicates
(e.g. by perceptual hash).
"""
from __future__ import annotations

from collections.abc import Iterator
import os
import pathlib

from ferjax.data.readers import DatasetInfo
from ferjax.data.readers import folder

FOLDERS = {
    'angry': 'anger', 'disgust': 'disgust', 'fear': 'fear', 'happy': 'happy',
    'neutral': 'neutral', 'sad': 'sad', 'surprise': 'surprise',
}
SPLIT_FOLDERS = {'train': ('train',), 'val': ('valid', 'val'), 'test': ('test',)}

INFO = DatasetInfo(
    name='mma',
    native_classes=tuple(FOLDERS[k] for k in sorted(FOLDERS)),
    class_space='affectnet7',
    splits=('train', 'val', 'test'),
    layout='<manual_dir>/MMAFEDB/{train,valid,test}/{angry,disgust,fear,happy,neutral,sad,'
           'surprise}/*.jpg',
)


def examples(manual_dir: str | os.PathLike, split: str) -> Iterator[tuple[str, dict]]:
  """(key, example) for every image of one split; key = path relative to the MMAFEDB folder."""
  folder.check_split(split, INFO.splits)
  root = pathlib.Path(manual_dir)
  if (root / 'MMAFEDB').is_dir():
    root = root / 'MMAFEDB'
  split_dir = folder.find_split_dir(root, split, SPLIT_FOLDERS)
  mapping = folder.class_folders(split_dir, FOLDERS, allowed=INFO.native_classes)
  yield from folder.folder_examples(root, split_dir, mapping)
