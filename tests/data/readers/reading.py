"""Helpers that run a reader to the end and index what it yields, shared by the reader tests."""
from __future__ import annotations


def collect(it):
  return dict(it)


def by_folder(examples):
  """{class folder name: label} from keys '<split>/<class>/<file>'."""
  return {key.split('/')[-2]: ex['label'] for key, ex in examples.items()}


def read(module, root, split, **options):
  return dict(module.examples(str(root), split, **options))
