"""CAGE on AffectNet-8 (paper 003, Tables 6 and 7): MaxViT-T or EfficientNetV2-S, three versions.

One launch per row of Table 6's AffectNet-8 block,
  python -m ferjax.train --config configs/cage_affectnet8.py:ARGS --workdir runs/cage8_NAME
(paper numbers: P / R / F1, then V/A MSE / MAE / RMSE / CCC, which the official code computes
over V and A concatenated -- ferjax reports those as `va_concat_official`):

  NAME    ARGS                                            P    R    F1     MSE   MAE   RMSE  CCC
  eff_d   version=discrete,backbone=efficientnet_v2_s     .605 .599 .599
  d       version=discrete                                .602 .598 .599
  eff_c   backbone=efficientnet_v2_s                      .612 .606 .607   .1420 .2781 .3769 .6413
  c       (none: combined MaxViT-T)                       .623 .621 .621   .1370 .2715 .3701 .6592
  eff_va  version=va,backbone=efficientnet_v2_s,init=runs/cage8_eff_c    .1028 .2387 .3206 .7816
  va      version=va,init=runs/cage8_c                                   .1021 .2351 .3196 .7840

Table 7 is the MaxViT-T combined run read per dimension: RMSE V .331, A .305; CCC V .716, A .642
(ferjax's `valence_rmse`, `arousal_ccc`, ... columns). Arguments (`FILE:k=v,...`):
version=<discrete|combined|va>, backbone=<maxvit_t|efficientnet_v2_s>, init=DIR (the combined
run a VA model starts from; its head is dropped through config.train.init_exclude), epochs=N,
code_lr (the scripts' 4e-5 instead of Table 5's 5e-5), code_schedule (the scripts' per-iteration
cosine with T_max = 128 * 20), smoke.

Data: `affectnet:train` / `affectnet:val` (the 224 x 224 release; the val set is the test set, as
in the paper). 20 epochs, batch 128 (models/AffectNet8_*/train.py). Differences from the scripts:
the backbone starts from scratch (the scripts load torchvision's ImageNet weights; ferjax has no
pretrained-backbone option yet); no best-validation-loss checkpoint selection; the VA scripts'
class-balanced subsampling of the training set is not applied; random erasing fills with 0, not
the scripts' random values.
"""
from ferjax import config as fc

cage_setup = fc.sibling(__file__, '_cage')


def get_config(arg=None):
  return cage_setup.real_config(arg, task='affectnet', class_space='affectnet8', epochs=20.0)
