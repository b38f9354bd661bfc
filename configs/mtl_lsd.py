"""Paper 004's multi-task model on ABAW4-LSD (for users with the data; the LSD reader with its
landmark .txt files, ferjax.data.readers.lsd): train on the synthetic training set, keep the
epoch with the best macro F1 on the real validation frames.

  python -m ferjax.train --config configs/mtl_lsd.py --workdir runs/mtl_lsd
Arguments (`FILE:k=v,...`): smoke, mix=<none|mixup|mix_augment>,
appearance=<resnet50_vggface2|resnet50|mobilevitv2_200>, member=N (a weak model: fold N of 5
disjoint stratified 20% folds; -1 = strong), class_weights=<none|code>,
landmark_scale=<unit|pixel>, emotion=PATH, appearance_weights=PATH (state_dicts: the VGGFace2
ResNet-50 converted to torchvision key names; for appearance=resnet50 any ResNet-50, a
substitute for the authors' unreleased DINO-VGGFace weights), epochs=N, seed=N.
"""
from ferjax import config as fc

mtl_setup = fc.sibling(__file__, '_mtl')


def get_config(arg=None):
  a = fc.parse_arg(arg, dict(smoke=False, mix='mix_augment', appearance='resnet50_vggface2',
                             member=-1, folds=5, class_weights='none', landmark_scale='unit',
                             emotion='', appearance_weights='', epochs=None, seed=0))
  c = fc.base_config()
  mtl_setup.paper_config(c, a['appearance'], a['mix'])
  c.seed = int(a['seed'])
  c.mtl.class_weights = a['class_weights']
  c.mtl.landmark_scale = a['landmark_scale']
  c.mtl.emotion_weights = a['emotion']
  c.mtl.appearance_weights = a['appearance_weights']
  c.data.train, c.data.eval_sets = 'lsd:train', 'lsd:val'
  if int(a['member']) >= 0:
    mtl_setup.weak(c, int(a['member']), int(a['folds']))
  mtl_setup.best_by_f1(c, c.data.eval_sets)
  if a['smoke']:
    fc.shrink_for_smoke(c)
  if a['epochs'] is not None:
    c.train.epochs = float(a['epochs'])
  return fc.finalize(c)
