"""GReFEL (ferjax.methods.grefel, ferjax.models.grefel / window_attention).

Independent computations written here: the window cross-attention block and the reliability
balancing (with torch.nn.MultiheadAttention) re-stated in PyTorch with the same weights, and
the losses and eqs 10-19 by hand in numpy. Then the full-size network traced (parameter count)
and a smoke run through ferjax.trainer.train.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import config as config_lib, methods, trainer
from ferjax.methods import grefel
from ferjax.models import grefel as net
from ferjax.models.window_attention import CrossAttentionBlock
from ferjax.steps import dummy_input
from tests.conftest import REPO

torch = pytest.importorskip('torch')
F = torch.nn.functional

SYNTH = os.path.join(REPO, 'configs', 'grefel_synthetic.py')


def load(arg='', **overrides):
  cfg = config_lib.load(f'{SYNTH}:{arg}' if arg else SYNTH)
  with cfg.unlocked():
    cfg.update_from_flattened_dict(overrides)
  return cfg


def t(a):
  return torch.from_numpy(np.array(a, np.float32))


def linear(p):
  """A Flax Dense's params -> a torch Linear with the same weights."""
  k = np.asarray(p['kernel'])
  lin = torch.nn.Linear(*k.shape)
  lin.weight.data, lin.bias.data = t(k.T), t(p['bias'])
  return lin


# ---------------------------------------------------------------------------------------------
# Window cross-attention against PyTorch
# ---------------------------------------------------------------------------------------------


class TorchCrossBlock(torch.nn.Module):
  """POSTER++'s window -> WindowAttentionGlobal -> feedforward, NHWC, with eq 1's W_q and
  eq 4's raw shortcut as options; weights copied from a Flax CrossAttentionBlock."""

  def __init__(self, p, heads, window, query_proj, shortcut):
    super().__init__()
    self.heads, self.w, self.query_proj, self.shortcut = heads, window, query_proj, shortcut
    self.qkv, self.proj = linear(p['attn']['qkv']), linear(p['attn']['proj'])
    self.q = linear(p['attn']['q']) if query_proj else None
    self.table = t(p['attn']['relative_position_bias_table'])
    self.fc1, self.fc2 = linear(p['mlp_fc1']), linear(p['mlp_fc2'])
    self.g1, self.g2 = t(p['gamma1']), t(p['gamma2'])
    self.ln = [(t(p[n]['scale']), t(p[n]['bias'])) for n in ('norm', 'norm2')]
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                        indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    self.index = rel[..., 0] * (2 * window - 1) + rel[..., 1]

  def part(self, x):
    b, h, w, c = x.shape
    x = x.view(b, h // self.w, self.w, w // self.w, self.w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, self.w * self.w, c)

  def forward(self, x_img, x_lm):
    b, h, w, c = x_img.shape
    x_n = F.layer_norm(x_img, (c,), *self.ln[0], eps=1e-5)
    xw, qw = self.part(x_n), self.part(x_lm)
    bw, n, _ = xw.shape
    hd = c // self.heads
    kv = self.qkv(xw).reshape(bw, n, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
    q = self.q(qw) if self.query_proj else qw
    q = q.reshape(bw, n, self.heads, hd).permute(0, 2, 1, 3) * hd ** -0.5
    bias = self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1)
    attn = torch.softmax(q @ kv[0].transpose(-2, -1) + bias[None], -1)
    o = self.proj((attn @ kv[1]).transpose(1, 2).reshape(bw, n, c))
    o = o.view(b, h // self.w, w // self.w, self.w, self.w, c).permute(0, 1, 3, 2, 4, 5)
    o = o.reshape(b, h, w, c)
    x = (x_img if self.shortcut == 'raw' else x_n) + self.g1 * o
    y = self.fc2(F.gelu(self.fc1(F.layer_norm(x, (c,), *self.ln[1], eps=1e-5))))
    return x + self.g2 * y


@pytest.mark.parametrize('query_proj,shortcut', [(True, 'raw'), (False, 'norm')])
def test_window_cross_attention_matches_torch(query_proj, shortcut):
  rng = np.random.default_rng(0)
  x_img = rng.normal(size=(2, 8, 8, 16)).astype(np.float32)
  x_lm = rng.normal(size=(2, 8, 8, 16)).astype(np.float32)
  # layer_scale 0.5 rather than 1e-5, so the attention and MLP branches show in the output.
  block = CrossAttentionBlock(heads=2, window=4, drop_path=0.25, layer_scale=0.5,
                              shortcut=shortcut, query_proj=query_proj)
  params = block.init(jax.random.key(0), x_img, x_lm)['params']
  params = jax.tree.map(lambda a: a + 0.1 * rng.normal(size=a.shape).astype(np.float32), params)
  out = block.apply({'params': params}, x_img, x_lm)       # train=False: no drop path
  ref = TorchCrossBlock(params, 2, 4, query_proj, shortcut)(t(x_img), t(x_lm))
  np.testing.assert_allclose(np.asarray(out), ref.detach().numpy(), atol=2e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Reliability balancing (eqs 10-19) and the losses (eqs 20-22), by hand
# ---------------------------------------------------------------------------------------------

C, K, E, B = 4, 3, 12, 6


def np_conf(p):
  return 1.0 + np.sum(p * np.log(p), -1) / np.log(p.shape[-1])


def np_softmax(x):
  z = np.exp(x - x.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


@pytest.fixture(scope='module')
def rb_case():
  rng = np.random.default_rng(1)
  e = rng.normal(size=(B, E)).astype(np.float32)
  primary = np_softmax(2 * rng.normal(size=(B, C))).astype(np.float32)
  rb = {mode: net.ReliabilityBalancing(C, K, attn_heads=2, attn_mode=mode, delta=0.7)
        for mode in ('sample', 'batch')}
  params = rb['sample'].init(jax.random.key(2), e, primary)['params']
  params = jax.tree.map(lambda a: a + 0.3 * rng.normal(size=a.shape).astype(np.float32), params)
  out = {m: jax.jit(lambda p, e, l, m=m: rb[m].apply({'params': p}, e, l))(params, e, primary)
         for m in rb}
  return e, primary, params, out


def torch_attentive(params, e, mode):
  """t_a as ARBEx's SelfAttn: Linear(E, C*K) x 3 -> nn.MultiheadAttention(C*K, 2) -> softmax
  -> sum over K; 'sample' feeds each sample alone (a sequence of one)."""
  w = C * K
  mha = torch.nn.MultiheadAttention(w, 2)
  cat = lambda key: t(np.concatenate([np.asarray(params[f'in_{n}'][key]) for n in 'qkv'], -1))
  mha.in_proj_weight.data, mha.in_proj_bias.data = cat('kernel').T, cat('bias')
  mha.out_proj.weight.data = t(np.asarray(params['out_proj']['kernel']).T)
  mha.out_proj.bias.data = t(params['out_proj']['bias'])
  q, k, v = (linear(params[f'{n}_proj'])(t(e)) for n in ('query', 'key', 'value'))
  if mode == 'batch':     # ARBEx: an unbatched (B, C*K) input is a sequence of length B
    o = mha(q, k, v, need_weights=False)[0]
  else:
    o = torch.cat([mha(q[i:i + 1], k[i:i + 1], v[i:i + 1], need_weights=False)[0]
                   for i in range(len(e))])
  return torch.softmax(o, -1).view(-1, C, K).sum(-1).detach().numpy()


@pytest.mark.parametrize('mode', ['sample', 'batch'])
def test_reliability_balancing_by_hand(rb_case, mode):
  e, primary, params, outs = rb_case
  out = outs[mode]
  a = np.asarray(params['anchors'], np.float64)
  d = np.sqrt(((e[:, None, None] - a[None]) ** 2).sum(-1))                    # eq 13
  t_g = np_softmax(-d.reshape(B, -1) / 0.7).reshape(B, C, K).sum(-1)         # eqs 14-15
  t_a = torch_attentive(params, e, mode)                                      # eqs 16-17
  cg, ca = np_conf(t_g)[:, None], np_conf(t_a)[:, None]
  t_ = (cg * t_g + ca * t_a) / (cg + ca)                                       # eq 18
  cl, ct = np_conf(primary)[:, None], np_conf(t_)[:, None]
  final = (cl * primary + ct * t_) / (cl + ct)                                 # eq 19
  for key, want in (('distances', d), ('t_g', t_g), ('t_a', t_a), ('t', t_), ('final', final)):
    np.testing.assert_allclose(np.asarray(out[key]), want, rtol=2e-5, atol=2e-6, err_msg=key)
  arbex = net.final_distribution(jnp.asarray(primary), out['t'], 'arbex', trust=0.3)
  np.testing.assert_allclose(arbex, 0.7 * primary + 0.3 * (cl * primary + (1 - cl) * t_),
                             rtol=2e-5, atol=2e-6)


def test_sample_attention_does_not_mix_the_batch(rb_case):
  e, primary, params, outs = rb_case
  rb = net.ReliabilityBalancing(C, K, attn_heads=2, attn_mode='sample', delta=0.7)
  half = rb.apply({'params': params}, e[:3], primary[:3])
  np.testing.assert_allclose(half['t_a'], outs['sample']['t_a'][:3], rtol=1e-5, atol=1e-6)
  mixed = net.ReliabilityBalancing(C, K, attn_heads=2, attn_mode='batch', delta=0.7)
  part = mixed.apply({'params': params}, e[:3], primary[:3])
  assert not np.allclose(part['t_a'], outs['batch']['t_a'][:3], atol=1e-4)


def test_confidence_is_one_minus_normalised_entropy():
  p = np.array([[1.0, 0, 0, 0], [0.25] * 4, [0.7, 0.1, 0.1, 0.1]], np.float32)
  want = [1.0, 0.0, 1 + (0.7 * np.log(0.7) + 0.3 * np.log(0.1)) / np.log(4)]
  np.testing.assert_allclose(net.confidence(jnp.asarray(p)), want, atol=1e-6)


def np_anchor_loss(a, mode):
  c, k, e = a.shape
  if mode == 'paper':         # eq 21 over every (k, l) pair of different classes, per dimension
    terms = [np.sum((a[i, kk] - a[j, ll]) ** 2) for i in range(c) for j in range(c) if i != j
             for kk in range(k) for ll in range(k)]
    return -np.mean(terms) / e
  flat = a.reshape(c, -1)     # ARBEx AnchorLoss: flattened classes, /sqrt(E)/K^2
  return -sum(np.sum((flat[i] - flat[j]) ** 2) for i in range(c) for j in range(c)) \
      / np.sqrt(e) / k ** 2


def np_center_loss(d, label, valid, mode, conf, e):
  rows = []
  for b in np.flatnonzero(valid):
    m = d[b, label[b]].min()
    rows.append(m ** 2 if mode == 'paper' else m * conf[b] / np.sqrt(e))
  return np.mean(rows)


@pytest.mark.parametrize('mode', ['paper', 'arbex'])
def test_anchor_and_center_losses_by_hand(rb_case, mode):
  e, primary, params, outs = rb_case
  a = np.asarray(params['anchors'], np.float64)
  np.testing.assert_allclose(grefel.anchor_loss(jnp.asarray(a, jnp.float32), mode),
                             np_anchor_loss(a, mode), rtol=1e-5)
  label = np.array([0, 3, -1, 2, 1, 1])
  mask = np.array([1, 1, 1, 1, 1, 0], np.float32)
  d = np.asarray(outs['sample']['distances'], np.float64)
  conf = np_conf(primary.astype(np.float64))
  got = grefel.center_loss(jnp.asarray(d, jnp.float32), jnp.asarray(label), jnp.asarray(mask),
                           mode, jnp.asarray(conf, jnp.float32), E)
  want = np_center_loss(d, label, (mask > 0) & (label >= 0), mode, conf, E)
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize('smoothing,ramp', [(0.0, 0), (0.11, 10)])
def test_method_loss_is_nll_of_the_final_distribution_plus_aux(rb_case, smoothing, ramp):
  e, primary, params, outs = rb_case
  cfg = load('smoke', **{'loss.label_smoothing': smoothing, 'grefel.trust_ramp_steps': ramp,
                         'grefel.lambda_anchor': 0.5, 'grefel.lambda_center': 2.0,
                         'grefel.embed_dim': E})
  method = methods.build(cfg)
  outputs = dict(outs['sample'], primary=jnp.asarray(primary), embedding=jnp.asarray(e))
  label = np.array([0, 3, -1, 2, 1, 1])
  mask = np.array([1, 1, 1, 1, 1, 0], np.float32)
  total, m = method.loss(outputs, {'label': jnp.asarray(label), 'mask': jnp.asarray(mask)}, 4)
  tau = 1.0 if not ramp else 4 / ramp
  final = (1 - tau) * primary + tau * np.asarray(outs['sample']['final'])
  valid = (mask > 0) & (label >= 0)
  logp = np.log(final[valid])
  nll = -logp[np.arange(valid.sum()), label[valid]]
  cls = np.mean((1 - smoothing) * nll - smoothing / C * logp.sum(-1))
  la = np_anchor_loss(np.asarray(params['anchors'], np.float64), 'paper')
  lc = np_center_loss(np.asarray(outs['sample']['distances']), label, valid, 'paper', None, E)
  np.testing.assert_allclose(m['loss_cls'], cls, rtol=1e-5)
  np.testing.assert_allclose(total, cls + tau * (0.5 * la + 2.0 * lc), rtol=1e-5)
  acc = 100 * np.mean(final[valid].argmax(-1) == label[valid])
  np.testing.assert_allclose(m['accuracy'], acc, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The whole network: full-size trace, smoke training
# ---------------------------------------------------------------------------------------------


def _param_count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_full_size_traces_near_the_papers_43_8m_parameters():
  cfg = load()
  method = methods.build(cfg)
  shapes = jax.eval_shape(lambda: method.model.init(
      {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, dummy_input(cfg)))
  params = shapes['params']
  n = _param_count(params)
  # 44,257,110: IR-50 (3 stages) 17.61M, MobileFaceNet 1.01M, cross-attention (with eq 1's
  # W_q, 0.09M the code lacks) 1.05M, tokens and ViT 21.1M, SE 1.18M, head 0.05M, anchors and
  # attention 0.27M. Table 2 gives 43.84M: about 1% apart.
  assert n == 44_257_110
  assert abs(n - 43.84e6) / 43.84e6 < 0.015
  assert _param_count(params['rb']) == 8 * 10 * 768 + 210_480   # anchors + ARBEx's attention
  without_rb = load(**{'grefel.rb': 'none'})
  shapes = jax.eval_shape(lambda: methods.build(without_rb).model.init(
      {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, dummy_input(cfg)))
  assert n - _param_count(shapes['params']) == 271_920   # Table 2: +0.24M with RB


def test_smoke_training_and_evaluation(tmp_path):
  cfg = load('smoke', **{'train.max_steps': 2, 'data.eval_examples': 16,
                         'data.eval_sets': 'synthetic:lab:test', 'mesh.data': 1})
  reports = trainer.train(cfg, str(tmp_path))
  r = reports['synthetic:lab:test']
  assert r['n'] == 16 and 0 <= r['accuracy'] <= 100
  out = tmp_path / 'eval' / 'step_2'
  assert os.path.exists(out / 'results.json')
  assert os.path.getsize(out / 'confusion_primary_lab_test.png') > 0     # Fig. 4 without RB
  rb = json.loads((out / 'grefel_rb_lab_test.json').read_text())        # Fig. 9's numbers
  assert 0 <= rb['spread_final']['min'] <= rb['spread_final']['max'] <= 1


def test_pretrained_streams_load_and_the_frozen_landmark_net_keeps_its_statistics(tmp_path):
  from third_party.torch_reference import faces as face_refs
  torch.manual_seed(0)
  ir, mfn = face_refs.IRBackbone(4), face_refs.randomize_prelu(face_refs.MobileFaceNet())
  with torch.no_grad():
    for bn in (ir.body[20].res_layer[4], mfn.conv1.bn):
      bn.running_mean.normal_()
  torch.save(ir.state_dict(), tmp_path / 'ir50.pth')          # face.evoLVe's full IR-50
  torch.save({'state_dict': mfn.state_dict()}, tmp_path / 'mobilefacenet_model_best.pth.tar')
  cfg = load(**{'grefel.ir50_weights': str(tmp_path / 'ir50.pth'), 'grefel.freeze': 'landmark',
                'grefel.mobilefacenet_weights': str(tmp_path / 'mobilefacenet_model_best.pth.tar')})
  method = methods.build(cfg)
  abstract = jax.eval_shape(lambda: method.model.init(
      {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, dummy_input(cfg)))
  v = method.init_variables(abstract)
  kernel = ir.body[20].res_layer[3].weight.detach().permute(2, 3, 1, 0).numpy()
  np.testing.assert_array_equal(v['params']['image_net']['body_20']['res_layer_3']['kernel'],
                                kernel)
  np.testing.assert_array_equal(v['batch_stats']['image_net']['body_20']['res_layer_4']['mean'],
                                ir.body[20].res_layer[4].running_mean.numpy())
  np.testing.assert_array_equal(v['batch_stats']['landmark_net']['conv1']['bn']['mean'],
                                mfn.conv1.bn.running_mean.numpy())
  np.testing.assert_array_equal(v['params']['landmark_net']['conv_3']['model_0']['conv']['prelu']
                                ['slope'], mfn.conv_3.model[0].conv.prelu.weight.detach().numpy())
  assert method.frozen(('landmark_net', 'conv1', 'conv', 'kernel'))
  assert not method.frozen(('image_net', 'input_layer_0', 'kernel'))
  assert method.model.landmark_net.bn_frozen and not method.model.image_net.bn_frozen
  update = methods.build(load(**{'grefel.frozen_bn_update': True}))
  assert not update.model.landmark_net.bn_frozen    # PyTorch's train-mode statistics


def test_arbex_switches_zero_anchors_and_evaluation_without_correction(rb_case):
  e, primary, params, outs = rb_case
  method = methods.build(load('smoke,arbex'))
  g = load('smoke,arbex').grefel
  assert (g.num_anchors, g.anchor_init, g.attn_mode, g.final_mix) == (1, 'zeros', 'batch',
                                                                       'arbex')
  # Why the paper's N(0, 0.02^2) init is the default: at ARBEx's all-zero anchors the anchor
  # loss has no gradient, so K anchors of a class could never separate.
  zeros = jnp.zeros((C, K, E))
  for mode in ('paper', 'arbex'):
    assert not np.any(jax.grad(grefel.anchor_loss)(zeros, mode))
  out = dict(outs['batch'], primary=jnp.asarray(primary), embedding=jnp.asarray(e),
             probs=outs['batch']['final'])
  pred = method.predict(out)
  np.testing.assert_array_equal(pred['probs'], primary)       # ARBEx evaluates the head alone
  np.testing.assert_allclose(np.exp(pred['logits']), primary, rtol=1e-6)
