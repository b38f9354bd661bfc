"""Canonical class spaces.

Every dataset module maps its native order onto the canonical one (AffectNet's), and every
output file names its classes from here. Class order is the largest source of silent errors in
FER (see notes/datasets.md, the cross-walk table), so nothing else in ferjax hard-codes it.
"""
from __future__ import annotations

CANONICAL = ('neutral', 'happy', 'sad', 'surprise', 'fear', 'disgust', 'anger', 'contempt')

# Named class spaces: each is an ordered subset of CANONICAL.
SPACES = {
    'affectnet8': CANONICAL,
    'affectnet7': CANONICAL[:7],
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


def class_names(space: str | int) -> tuple[str, ...]:
  """Names of a class space given by name or by size (8 -> affectnet8, 7 -> affectnet7)."""
  if isinstance(space, int):
    by_size = {8: 'affectnet8', 7: 'affectnet7', 6: 'lsd6'}
    if space not in by_size:
      raise ValueError(f'no canonical class space has {space} classes; known sizes: {sorted(by_size)}')
    space = by_size[space]
  if space not in SPACES:
    raise ValueError(f'unknown class space {space!r}; known: {sorted(SPACES)}')
  return SPACES[space]


def index_map(native: tuple[str, ...], space: str | int = 'affectnet8') -> list[int]:
  """For each native class name, its index in `space` (-1 when the space lacks it)."""
  names = class_names(space)
  unknown = [n for n in native if n not in CANONICAL]
  if unknown:
    raise ValueError(f'native class names {unknown} are not canonical names {CANONICAL}')
  return [names.index(n) if n in names else -1 for n in native]
