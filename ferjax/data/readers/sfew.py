"""SFEW 2.0 (Static Facial Expressions in the Wild): `Train/` and `Val/` class folders.

Layout:

  <manual_dir>/Train/{Angry,Disgust,Fear,Happy,Neutral,Sad,Surprise}/*.png
  <manual_dir>/Val/{...same seven...}/*.png

Images are 720x576 movie frames from AFEW; faces are not cropped, so a face detector (or the
aligned-faces release, laid out the same way) comes before training. Test labels were never
released, so the splits are train and val only. Counts: 891 train / 431 val (857 / 410 once
faces are detected).

Folder names are matched case-insensitively; any other folder is an error rather than being
skipped, because a stray folder would otherwise shift an ImageFolder-style alphabetical index.
"""
from __future__ import annotations

from collections.abc import Iterator
import os
import pathlib

from ferjax.data.readers import DatasetInfo
from ferjax.data.readers import folder

# Folder name -> canonical name; the alphabetical folder order is the native (ImageFolder) order.
FOLDERS = {
    'Angry': 'anger', 'Disgust': 'disgust', 'Fear': 'fear', 'Happy': 'happy',
    'Neutral': 'neutral', 'Sad': 'sad', 'Surprise': 'surprise',
}
SPLIT_FOLDERS = {'train': ('Train',), 'val': ('Val',)}

INFO = DatasetInfo(
    name='sfew',
    native_classes=tuple(FOLDERS[k] for k in sorted(FOLDERS)),
    class_space='affectnet7',
    splits=('train', 'val'),
    layout='<manual_dir>/{Train,Val}/{Angry,Disgust,Fear,Happy,Neutral,Sad,Surprise}/*',
)


def examples(manual_dir: str | os.PathLike, split: str) -> Iterator[tuple[str, dict]]:
  """(key, example) for every image of one split; key = path relative to manual_dir."""
  folder.check_split(split, INFO.splits)
  root = pathlib.Path(manual_dir)
  split_dir = folder.find_split_dir(root, split, SPLIT_FOLDERS)
  mapping = folder.class_folders(split_dir, FOLDERS, allowed=INFO.native_classes)
  yield from folder.folder_examples(root, split_dir, mapping)
