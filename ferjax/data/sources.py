"""Dataset specs -> grain random-access sources.

A spec names a dataset and a split: 'synthetic:DOMAIN:SPLIT' for the embedded synthetic
benchmark (ferjax.data.synthetic). Real datasets (prepared TFDS/ArrayRecord) register here too.
"""
from __future__ import annotations

SPLITS = ('train', 'val', 'test')


def parse(spec: str) -> tuple[str, list[str]]:
  name, *rest = spec.strip().split(':')
  return name, rest


def make(spec: str, num_examples: int, image_size: int, seed: int):
  name, rest = parse(spec)
  if name == 'synthetic':
    from ferjax.data import synthetic
    if len(rest) != 2 or rest[0] not in synthetic.DOMAINS or rest[1] not in SPLITS:
      raise ValueError(f'bad dataset spec {spec!r}: expected synthetic:DOMAIN:SPLIT with DOMAIN '
                       f'in {synthetic.DOMAINS} and SPLIT in {SPLITS}')
    return synthetic.SyntheticFaces(rest[0], rest[1], num_examples=num_examples,
                                    image_size=image_size, seed=seed)
  raise ValueError(f'unknown dataset {name!r} in spec {spec!r}; known: synthetic')


def display_name(spec: str) -> str:
  """'synthetic:lab:test' -> 'lab/test' style short names for tables."""
  name, rest = parse(spec)
  return '/'.join(rest) if name == 'synthetic' else spec
