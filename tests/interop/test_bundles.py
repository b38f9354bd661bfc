"""Export bundles: every method's model in PyTorch (and ONNX Runtime) gives ferjax's predictions.

Each method's model gets random weights (BatchNorm statistics moved off 0 / 1), is written as a
bundle, loaded by `ferjax.interop.torch.load_bundle` (strict) and run on the same uint8 crops
as ferjax's own predict step; the weights read back into ferjax are bit-identical. The command
line round trip (train -> convert --to onnx -> predict with each backend) is at the end.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('onnxruntime')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from ferjax import config as config_lib, methods, steps, trainer  # noqa: E402
from ferjax.data import augment  # noqa: E402
from ferjax.interop import bundle, onnx as onnx_lib, torch as it  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.test_train import smoke  # noqa: E402

ATOL = 1e-4


def _cfg(name, arg='', **overrides):
  cfg = config_lib.load(os.path.join(REPO, 'configs', name) + (f':{arg}' if arg else ''))
  with cfg.unlocked():
    for k, v in overrides.items():
      section, key = k.split('.', 1)
      cfg[section][key] = v
  return cfg


def _random_variables(cfg, seed=0):
  method = methods.build(cfg)
  if cfg.method == 'grefel':   # its init costs 35 s eager (70 s to compile) on 2 cores
    from tests.methods.test_grefel_torch import random_variables
    return method, random_variables(cfg, seed)
  v = jax.device_get(steps.model_variables(method, cfg, jax.random.key(seed)))
  rng = np.random.default_rng(seed)
  stats = jax.tree.map(lambda a: (a + rng.uniform(0.1, 0.5, a.shape)).astype(np.float32),
                       v.get('batch_stats') or {})
  return method, {'params': v['params'], 'batch_stats': stats}


def _ferjax_predictions(cfg, method, variables, images, **inputs):
  def run(variables, images, inputs):
    x = augment.eval_preprocess({'image': images}, cfg.augment)['image']
    return method.predict(method.model.apply(variables, x, train=False, **inputs))
  if cfg.method == 'grefel':   # compiled once it costs a fifth of its op-by-op dispatch
    run = jax.jit(run)
  return jax.device_get(run(variables, jnp.asarray(images), inputs))


CASES = {
    'baseline_resnet18_va': ('baseline_synthetic.py', 'cpu,smoke', {}),
    'baseline_mobilenet_v2': ('baseline_synthetic.py', 'cpu,smoke',
                              {'model.backbone': 'mobilenet_v2'}),
    'cage_combined': ('cage_synthetic.py', 'smoke,version=combined', {}),
    'cage_va': ('cage_synthetic.py', 'smoke,version=va', {}),
    'dan': ('dan_synthetic.py', 'smoke', {'model.stage_sizes': (2, 2, 2, 2)}),
    'cafe': ('cafe_synthetic.py', 'cpu', {'model.stage_sizes': (2, 2, 2, 2)}),
    'ran': ('ldl_synthetic.py', 'smoke,model=ran', {'model.stage_sizes': (2, 2, 2, 2)}),
    'mten': ('ldl_synthetic.py', 'smoke,model=mten', {'mten.va_weight': 1.0}),
    'mtl': ('mtl_synthetic.py', 'smoke', {}),
    'grefel': ('grefel_synthetic.py', 'smoke', {}),
}
ONNX_CASES = ('baseline_resnet18_va', 'cage_combined', 'dan', 'grefel')


@pytest.mark.parametrize('case', sorted(CASES))
def test_bundle_loads_in_torch_and_matches_ferjax(case, tmp_path):
  name, arg, overrides = CASES[case]
  cfg = _cfg(name, arg, **overrides)
  method, variables = _random_variables(cfg)
  with_onnx = case in ONNX_CASES
  meta = bundle.write(cfg, variables, str(tmp_path / 'b'), onnx=with_onnx)
  assert meta['class_names'] == list(method.class_names)
  model = it.load_bundle(str(tmp_path / 'b'))             # strict load inside
  s = cfg.data.image_size
  images = np.random.default_rng(1).integers(0, 256, (3, s, s, 3), dtype=np.uint8)
  extra = {}
  if 'features' in model.extra_inputs:
    extra['features'] = np.random.default_rng(2).normal(
        size=(3, model.extra_inputs['features'])).astype(np.float32)
  got = model(images, **extra)
  want = _ferjax_predictions(cfg, method, variables, images, **extra)
  assert set(got) <= set(want) and 'logits' in got or 'va' in got
  for k in got:
    assert np.abs(want[k]).max() > 1e-3, k
    np.testing.assert_allclose(got[k], want[k], atol=ATOL, err_msg=k)
  if with_onnx:    # batch 3 through a graph traced at batch 2: the batch axis is dynamic
    got = onnx_lib.OnnxBundle(str(tmp_path / 'b'))(images)
    assert sorted(got) == sorted(o['name'] for o in meta['torch']['outputs'])
    for k in got:
      np.testing.assert_allclose(got[k], want[k], atol=ATOL, err_msg=f'onnx {k}')
  back = bundle.variables(cfg, bundle.read_state_dict(str(tmp_path / 'b')))
  flat_back, flat = it._leaves(back), it._leaves(variables)
  if cfg.method in ('dan', 'mtl'):   # the affinity centres are training state, not exported
    flat = {p: v for p, v in flat.items() if p[-1] != 'centers'}
    flat_back = {p: v for p, v in flat_back.items() if p[-1] != 'centers'}
  assert sorted(flat_back) == sorted(flat)
  for p, v in flat.items():
    np.testing.assert_array_equal(flat_back[p], v, err_msg='/'.join(p))


def test_resnet_baseline_without_va_head_is_torchvisions_resnet(tmp_path):
  import torchvision
  cfg = _cfg('baseline_synthetic.py', 'cpu', **{'model.va_head': False,
                                                'model.stage_sizes': (2, 2, 2, 2),
                                                'model.width': 64})
  method, variables = _random_variables(cfg)
  bundle.write(cfg, variables, str(tmp_path / 'b'))
  sd = bundle.read_state_dict(str(tmp_path / 'b'))
  net = torchvision.models.resnet18(num_classes=len(method.class_names)).eval()
  net.load_state_dict({k.removeprefix('backbone.'): torch.from_numpy(v) for k, v in sd.items()},
                      strict=True)
  s = cfg.data.image_size
  images = np.random.default_rng(3).integers(0, 256, (2, s, s, 3), dtype=np.uint8)
  with torch.no_grad():
    logits = net(torch.from_numpy(bundle.preprocess(bundle.read_meta(str(tmp_path / 'b')),
                                                    images))).numpy()
  want = _ferjax_predictions(cfg, method, variables, images)['logits']
  np.testing.assert_allclose(logits, want, atol=ATOL)


def test_a_failed_export_leaves_nothing_and_existing_bundles_are_kept(tmp_path, monkeypatch):
  cfg = _cfg('baseline_synthetic.py', 'cpu,smoke')
  _, variables = _random_variables(cfg)
  out = tmp_path / 'b'

  def fail(path):
    raise RuntimeError('onnx export failed')
  monkeypatch.setattr(onnx_lib, 'export', fail)
  with pytest.raises(RuntimeError):
    bundle.write(cfg, variables, str(out), onnx=True)
  assert os.listdir(tmp_path) == []
  bundle.write(cfg, variables, str(out))
  with pytest.raises(bundle.BundleError, match='--overwrite'):
    bundle.write(cfg, variables, str(out))
  with pytest.raises(RuntimeError):
    bundle.write(cfg, variables, str(out), onnx=True, overwrite=True)
  assert sorted(os.listdir(out)) == [bundle.CONFIG, bundle.META, bundle.WEIGHTS]
  assert sorted(os.listdir(tmp_path)) == ['b']


def test_methods_without_a_torch_module_are_refused_by_name():
  cfg = _cfg('baseline_synthetic.py', 'cpu,smoke')
  with cfg.unlocked():
    cfg.method = 'no_such_method'
  with pytest.raises(bundle.BundleError, match="method 'no_such_method'"):
    bundle.torch_spec(cfg)


# ---------------------------------------------------------------------------------------------
# Command line: a trained run -> bundle (+ ONNX) -> predict with every backend
# ---------------------------------------------------------------------------------------------


def _run(module, *args):
  return subprocess.run([sys.executable, '-m', module, *map(str, args)], cwd=REPO,
                        capture_output=True, text=True)


def _probs(path, names):
  import csv
  with open(path, newline='') as f:
    rows = [r for r in csv.DictReader(f) if r['status'] == 'ok']
  return np.array([[float(r[n]) for n in names] for r in rows])


def test_trained_run_round_trips_through_the_command_line(tmp_path):
  from PIL import Image
  workdir = tmp_path / 'run'
  trainer.train(smoke(**{'train.max_steps': 2, 'data.eval_sets': ''}), str(workdir))
  out = tmp_path / 'export'
  r = _run('ferjax.convert', '--from=ferjax', f'--in={workdir}', f'--out={out}', '--to=onnx')
  assert r.returncode == 0, r.stderr
  meta = json.loads((out / bundle.META).read_text())
  names = meta['class_names']
  assert 'bundle' in r.stderr and ','.join(names) in r.stderr
  r = _run('ferjax.convert', '--from=ferjax', f'--in={workdir}', f'--out={out}')
  assert r.returncode != 0 and '--overwrite' in r.stderr
  faces = tmp_path / 'faces'
  faces.mkdir()
  rng = np.random.default_rng(0)
  for i in range(3):
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(faces / f'{i}.png')
  probs = {}
  for model, backend in ((workdir, 'jax'), (out, 'jax'), (out, 'onnxruntime'), (out, 'torch'),
                         (out, 'auto')):
    csv_path = tmp_path / f'{backend}_{model.name}.csv'
    r = _run('ferjax.predict', f'--model={model}', f'--input={faces}', f'--out={csv_path}',
             '--faces=none', f'--backend={backend}')
    assert r.returncode == 0, r.stderr
    header = open(csv_path).readline().strip().split(',')
    assert header[10:10 + len(names)] == names
    probs[backend, model.name] = _probs(csv_path, names)
  assert 'onnxruntime' in _run('ferjax.predict', f'--model={out}', f'--input={faces}',
                               f'--out={tmp_path}/x.csv', '--faces=none').stderr
  want = probs['jax', 'run']
  assert want.shape == (3, len(names))
  for key, got in probs.items():
    np.testing.assert_allclose(got, want, atol=ATOL, err_msg=str(key))
  r = _run('ferjax.predict', f'--model={workdir}', f'--input={faces}', f'--out={tmp_path}/y.csv',
           '--backend=onnxruntime')
  assert r.returncode == 2 and 'export it with' in r.stderr
