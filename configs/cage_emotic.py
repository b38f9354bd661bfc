"""CAGE on EMOTIC (paper 003, Table 8): MaxViT-T, 26 categories (multi-label) + V/A/D.

  python -m ferjax.train --config configs/cage_emotic.py:init=runs/cage8_c --workdir runs/cage_em

Table 8 (MaxViT-T combined; the scaled column, V/A/D mapped from 1..10 to [-1, 1] by
(x * 2 - 11) / 9 as the script does): top-3 accuracy 14.73%; RMSE V .256, A .269, D .260;
CCC V .316, A .595, D .301. ferjax reports `top3_accuracy` (share of body crops whose three
highest-scoring categories include a true one -- the paper does not define its top-3 accuracy),
`precision_at_3`, mean AP, and per-dimension RMSE/CCC under `vad`.

The model (EMOTIC_Model_Discrete+VAD.py, git history of the official repository): the CAGE head
with 29 outputs, BCEWithLogits(pos_weight = (N - n_c) / n_c, N = 23,266 training crops) +
5 * MSE(V, A, D); batch 32, 30 epochs, AdamW lr 5e-5, the same per-iteration cosine quirk
(code_schedule: T_max = 32 * 30). Its images are normalised twice (ImageNet, then the body-crop
statistics); augment.mean/std here are the single equivalent pair. "We use the best model trained
on AffectNet to retrain our model on EMOTIC" (Sec. 4.3): init=DIR starts from an AffectNet run;
its final layer (classifier_5, C + 2 outputs) is dropped through config.train.init_exclude.

Needs, before it can train: (1) cage.pos_counts, the 26 positives per category of the training
split (`cage.count_positives(ferjax.data.sources.make('emotic:train', 0, 224, 0))`; without them
the BCE is unweighted); (2) the batch to carry 'multilabel' [B, 26] and 'vad' [B, 3] (+ a
'vad_mask'), which ferjax.data.pipeline.standardize does not pass on yet.

Arguments (`FILE:k=v,...`): init=DIR, version=<combined|discrete>, epochs=N, code_lr (no-op
here: the EMOTIC script already uses 5e-5), code_schedule, smoke.
"""
from ferjax import config as fc

cage_setup = fc.sibling(__file__, '_cage')


def get_config(arg=None):
  c = cage_setup.real_config(arg, task='emotic', class_space='emotic26', epochs=30.0,
                             batch_size=32)
  if c.train.init_from:
    c.train.init_exclude = 'classifier_5'   # the AffectNet head's C + 2 outputs
  return c
