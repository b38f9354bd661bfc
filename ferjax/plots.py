"""Report figures (confusion matrix, per-domain bars, valence/arousal scatter).

We draw with matplotlib's object API (``Figure`` + the Agg canvas) instead of
``pyplot``.  That renders off-screen on headless machines without calling
``matplotlib.use`` -- which would change the global backend for every other
module -- and without pyplot's global figure registry, so figures cannot leak
memory across a long training run.  matplotlib itself is imported inside the
functions so that importing :mod:`ferjax.plots` costs nothing for code paths
that never plot.

Every function writes a PNG to ``path`` (creating parent directories) and
returns the path as a string.
"""

from __future__ import annotations

import os
from typing import Dict, Sequence

import numpy as np


def _new_figure(figsize):
  """Figure attached to an Agg canvas (off-screen rendering)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=figsize, dpi=120)
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path) -> str:
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  fig.savefig(path, format='png', bbox_inches='tight')
  return path


def plot_confusion(confusion, class_names: Sequence[str], path, title: str = '',
           normalize: bool = True) -> str:
  """Confusion matrix heat map, rows = true class, columns = predicted.

  With ``normalize`` the colour and the main number are row percentages
  (i.e. per-class recall on the diagonal) and the raw count is shown
  underneath in brackets; otherwise cells show counts only.  Rows with no
  examples show 0%.
  """
  conf = np.asarray(confusion, np.float64)
  k = conf.shape[0]
  if conf.shape != (k, k) or len(class_names) != k:
    raise ValueError(f'confusion {conf.shape} does not match '
             f'{len(class_names)} class names')
  row_sum = conf.sum(axis=1, keepdims=True)
  frac = np.divide(conf, row_sum, out=np.zeros_like(conf), where=row_sum > 0)
  shown = frac if normalize else conf
  vmax = 1.0 if normalize else max(conf.max(), 1.0)

  size = max(4.0, 0.75 * k + 2.0)
  fig = _new_figure((size + 1.0, size))
  ax = fig.add_subplot(1, 1, 1)
  im = ax.imshow(shown, cmap='Blues', vmin=0.0, vmax=vmax)
  cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  cbar.set_label('row %' if normalize else 'count')
  if normalize:
    cbar.set_ticks(np.linspace(0, 1, 6))
    cbar.set_ticklabels([f'{int(t * 100)}' for t in np.linspace(0, 1, 6)])

  ax.set_xticks(range(k))
  ax.set_yticks(range(k))
  ax.set_xticklabels(class_names, rotation=45, ha='right')
  ax.set_yticklabels(class_names)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  if title:
    ax.set_title(title)

  # Font shrinks with K so 8x8 AffectNet matrices stay legible.
  fontsize = 9 if k <= 7 else 8
  for i in range(k):
    for j in range(k):
      count = int(round(conf[i, j]))
      text = (f'{100 * frac[i, j]:.1f}%\n({count})' if normalize
          else f'{count}')
      # White text on dark cells, black on light ones.
      dark = shown[i, j] / vmax > 0.5
      ax.text(j, i, text, ha='center', va='center', fontsize=fontsize,
          color='white' if dark else 'black')
  return _save(fig, path)


def plot_per_domain_bars(results: Dict[str, float], path,
             title: str = '') -> str:
  """Bar chart of one score per domain / dataset, value printed on each bar.

  Values in [0, 1] are treated as fractions and labelled as percentages;
  anything else is labelled as-is.
  """
  names = [str(k) for k in results]
  values = np.asarray([float(results[k]) for k in results], np.float64)
  fractions = values.size > 0 and np.all((values >= 0) & (values <= 1))

  fig = _new_figure((max(4.0, 0.9 * len(names) + 2.0), 4.0))
  ax = fig.add_subplot(1, 1, 1)
  # Fractions are drawn on a 0-100 axis so bar labels and axis agree.
  heights = 100.0 * values if fractions else values
  bars = ax.bar(range(len(names)), heights, color='tab:blue')
  ax.set_xticks(range(len(names)))
  ax.set_xticklabels(names, rotation=30, ha='right')
  if fractions:
    ax.set_ylim(0, 108)
    ax.set_ylabel('%')
  for bar, v in zip(bars, heights):
    label = f'{v:.1f}' if fractions else f'{v:.3g}'
    ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
          ha='center', va='bottom', fontsize=8,
          xytext=(0, 2), textcoords='offset points')
  ax.grid(axis='y', alpha=0.3)
  if title:
    ax.set_title(title)
  return _save(fig, path)


def plot_va_scatter(target, pred, path, title: str = '',
          names: Sequence[str] = ('valence', 'arousal')) -> str:
  """Predicted vs. true scatter for each of the two affect dimensions.

  One panel per dimension with the identity line; the panel title carries
  the (biased) CCC so the figure can be read without the metrics file.
  Large sets are subsampled (fixed seed) to keep the PNG light.
  """
  from ferjax.metrics import _ccc_np  # local: keeps plots import-light

  target = np.asarray(target, np.float64)
  pred = np.asarray(pred, np.float64)
  if target.shape != pred.shape or target.ndim != 2:
    raise ValueError(f'target {target.shape} and pred {pred.shape} must be '
             'equal [N, D] shapes')
  d = target.shape[1]
  idx = np.arange(target.shape[0])
  if idx.size > 5000:
    idx = np.random.default_rng(0).choice(idx, 5000, replace=False)

  fig = _new_figure((4.2 * d, 4.2))
  # Square panels with axis labels need extra horizontal room.
  fig.subplots_adjust(wspace=0.35)
  for j in range(d):
    ax = fig.add_subplot(1, d, j + 1)
    ax.scatter(target[idx, j], pred[idx, j], s=4, alpha=0.4,
           color='tab:blue', linewidths=0)
    ax.plot([-1, 1], [-1, 1], color='tab:red', lw=1)
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect('equal')
    name = names[j] if j < len(names) else f'dim {j}'
    ccc = _ccc_np(pred[:, j], target[:, j]) if target.shape[0] else 0.0
    ax.set_title(f'{name}  CCC={ccc:.3f}')
    ax.set_xlabel(f'true {name}')
    ax.set_ylabel(f'predicted {name}')
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def plot_abs_error_curve(curve: dict, path, title: str = '') -> str:
  """Share of predictions within an absolute-error bound, one line per dimension (CAGE Fig. 10).

  ``curve`` is :func:`ferjax.metrics.abs_error_curve`'s dict: ``bounds`` and one list of shares
  per dimension name (``n`` is ignored). A dotted guide marks the paper's reading at +-0.3.
  """
  bounds = np.asarray(curve['bounds'], np.float64)
  dims = [k for k in curve if k not in ('bounds', 'n')]
  fig = _new_figure((5.0, 4.0))
  ax = fig.add_subplot(1, 1, 1)
  for name in dims:
    ax.plot(bounds, 100.0 * np.asarray(curve[name], np.float64), marker='.', label=name)
  ax.axvline(0.3, color='grey', lw=0.8, ls=':')
  ax.set_xlim(bounds.min(), bounds.max())
  ax.set_ylim(0, 101)
  ax.set_xlabel('absolute error bound')
  ax.set_ylabel('predictions within the bound (%)')
  ax.grid(alpha=0.3)
  ax.legend(loc='lower right')
  if title:
    ax.set_title(title)
  return _save(fig, path)
