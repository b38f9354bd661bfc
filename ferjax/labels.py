"""Named class spaces and the one canonical table of expression names.

A run's class space (`config.data.class_space`) names its classes and their order; every
dataset declares the names of its own labels, and `space_map` maps them into the run's space by
name, never by position. Output files name their classes from here.
"""
from __future__ import annotations

import numpy as np

from ferjax.errors import ConfigError

CANONICAL = ('neutral', 'happy', 'sad', 'surprise', 'fear', 'disgust', 'anger', 'contempt')

# Single-label spaces: ordered subsets of CANONICAL. Besides AffectNet's canonical order, the
# native orders of the datasets whose released models have heads in that order.
SPACES = {
    'affectnet8': CANONICAL,
    'affectnet7': CANONICAL[:7],
    # RAF-DB's label file order (1 surprise ... 7 neutral).
    'rafdb7': ('surprise', 'fear', 'disgust', 'happy', 'sad', 'anger', 'neutral'),
    # FER2013's order (0 angry ... 6 neutral).
    'fer2013_7': ('anger', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral'),
    # FERPlus's vote columns (neutral, happiness, surprise, sadness, anger, disgust, fear,
    # contempt).
    'ferplus8': ('neutral', 'happy', 'surprise', 'sad', 'anger', 'disgust', 'fear', 'contempt'),
    # ABAW4 LSD: the six basic emotions (no neutral, no contempt), canonical order.
    'lsd6': ('happy', 'sad', 'surprise', 'fear', 'disgust', 'anger'),
}

# Multi-label category spaces (not subsets of CANONICAL): EMOTIC's 26 categories in the order of
# its annotations and papers.
MULTILABEL_SPACES = {
    'emotic26': ('affection', 'anger', 'annoyance', 'anticipation', 'aversion', 'confidence',
                 'disapproval', 'disconnection', 'disquietment', 'doubt_confusion',
                 'embarrassment', 'engagement', 'esteem', 'excitement', 'fatigue', 'fear',
                 'happiness', 'pain', 'peace', 'pleasure', 'sadness', 'sensitivity', 'suffering',
                 'surprise', 'sympathy', 'yearning'),
}

# What happens to an example whose class is outside the run's space (config.data.outside_space).
OUTSIDE = ('error', 'drop', 'unlabel')


def known_spaces() -> list[str]:
  return sorted(SPACES) + sorted(MULTILABEL_SPACES)


def class_names(space: str) -> tuple[str, ...]:
  """Names of a class space, in order."""
  if not isinstance(space, str):
    raise TypeError(f'a class space is named (one of {known_spaces()}), not {space!r}')
  if space in SPACES:
    return SPACES[space]
  if space in MULTILABEL_SPACES:
    return MULTILABEL_SPACES[space]
  raise ConfigError(f'unknown class space {space!r}; known: {known_spaces()}')


def is_multilabel(space: str) -> bool:
  return space in MULTILABEL_SPACES


def spaces_of_size(k: int) -> list[str]:
  return [name for name in known_spaces() if len(class_names(name)) == k]


def index_map(native: tuple[str, ...], space: str = 'affectnet8') -> list[int]:
  """For each native class name, its index in `space` (-1 when the space lacks it)."""
  names = class_names(space)
  unknown = [n for n in native if n not in CANONICAL]
  if unknown:
    raise ValueError(f'native class names {unknown} are not canonical names {CANONICAL}')
  return [names.index(n) if n in names else -1 for n in native]


def space_map(source_names, space_names) -> np.ndarray:
  """int64 [len(source_names)]: each source class's index among `space_names`, -1 if absent."""
  return np.array([space_names.index(n) if n in space_names else -1 for n in source_names],
                  np.int64)


def resolve(cfg) -> tuple[str, ...]:
  """The run's class names; checks `config.model.num_classes` against the named space (0 takes
  the space's size) and sets it, so every later reader sees one consistent number."""
  space = cfg.data.class_space
  names = class_names(space)
  k = int(cfg.model.num_classes)
  if k not in (0, len(names)):
    fits = spaces_of_size(k)
    raise ConfigError(
        f'config.model.num_classes={k} does not match config.data.class_space={space!r} '
        f'({len(names)} classes: {", ".join(names)}); name the space instead: '
        + (f'--config.data.class_space={" or ".join(fits)}' if fits else
           f'no known space has {k} classes (known: {known_spaces()})'))
  if k != len(names):
    cfg.model.num_classes = len(names)
  return names
