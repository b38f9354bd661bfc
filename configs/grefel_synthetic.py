"""GReFEL (paper 001) on the synthetic face benchmark.

Launch (full size: IR-50 + MobileFaceNet streams at 112 px, ViT of 768, K = 10; an
accelerator):
  python -m ferjax.train --config configs/grefel_synthetic.py --workdir runs/grefel
A reduced network for 2 CPU cores (64 px, IR-50 with 1/1/2 units, a ViT of 192, `lab`):
  python -m ferjax.train --config configs/grefel_synthetic.py:cpu --workdir runs/grefel_cpu
Arguments (`FILE:k=v,...`): cpu, smoke, domain=<lab|wild|cartoon|lowq|occluded>, epochs=N,
anchors=K (Table 6), rb=<both|anchors|attention|none> (Table 2), arbex (every ARBEx-code
switch at once: K = 1 zero anchors, batch attention, its final mix, losses and head,
evaluation without correction).

The paper's training set-up (Sec. 4.1): Adam at 3e-4 with exponential decay 0.995 per epoch,
class-balanced batches (B / C images of every class), label smoothing 0.11 (Table 8's best),
crop, flip, rotation and colour augmentation. The synthetic benchmark has no pre-trained
landmark net yet, so both streams train here (`grefel.freeze='none'`); the paper freezes a
68-landmark MobileFaceNet.
"""
from ferjax import config as fc
from ferjax.methods import grefel

# Every ARBEx-code difference that is a switch, for `arbex` (the paper is the default).
ARBEX = dict(num_anchors=1, anchor_init='zeros', attn_mode='batch', final_mix='arbex',
             anchor_loss='arbex', center_loss='arbex', head='arbex', eval_correction=False,
             xattn_shortcut='norm', xattn_query_proj=False)
# (ARBEx also freezes both pre-trained backbones, `freeze='both', frozen_bn_update=True`; with
# no pre-trained nets on this benchmark that would freeze random ones, so `arbex` leaves them.)
# 2 CPU cores: the backbones fix the cross-attention widths (64/128/256); the IR-50 depth, the
# ViT width and the resolution shrink: 64 px streams give 16/8/4 maps and 48 tokens, which
# MobileFaceNet allows without its (unused) 7x7 landmark head.
CPU = dict(ir_stages=(1, 1, 2), embed_dim=192, vit_heads=4, vit_depth=2, num_anchors=4,
           resize=64, landmark_head=False)
# Smoke: 32 px streams (maps 8/4/2, 12 tokens), possible without MobileFaceNet's 7x7 head;
# no residual blocks in its stages (fewer ops to compile; the strided blocks remain).
SMOKE = dict(ir_stages=(1, 1, 1), embed_dim=32, vit_heads=2, vit_depth=1, num_anchors=2,
             resize=32, landmark_head=False, landmark_blocks=(0, 0, 0))


def get_config(arg=None):
  a = fc.parse_arg(arg, dict(cpu=False, smoke=False, domain='', epochs=None, anchors=None,
                             rb=None, arbex=False))
  a['domain'] = a['domain'] or ('lab' if a['cpu'] or a['smoke'] else 'wild')
  if a['domain'] not in fc.SYNTHETIC_DOMAINS:
    raise ValueError(f"domain={a['domain']!r}; the synthetic domains are {fc.SYNTHETIC_DOMAINS}")
  c = fc.base_config()
  c.method = 'grefel'
  c.grefel = grefel.config_section()
  c.grefel.freeze = 'none'
  c.model.va_head = False                  # baseline-only switch
  c.data.train = f"synthetic:{a['domain']}:train"
  c.data.eval_sets = ','.join(f'synthetic:{d}:test' for d in fc.SYNTHETIC_DOMAINS)
  c.data.train_examples = 20000
  c.data.eval_examples = 2000
  # The network resizes every input to 112 (as the code does with its 224 crops): render there.
  c.data.image_size = 112
  c.data.sampler = 'class_balanced'
  c.batch_size = 64
  c.train.epochs = 30.0
  c.loss.label_smoothing = 0.11
  c.optim.update(dict(name='adam', lr=3e-4, weight_decay=0.0, schedule='exponential',
                      decay_rate=0.995, decay_per='epoch', warmup_epochs=0.0))
  # Resize 256 -> random crop 224 is a shift of up to 16/224 of the side each way.
  c.augment.update(dict(flip=True, crop_pad=16 / 224, rotate_deg=10.0, brightness=0.2,
                        contrast=0.2, saturation=0.2))
  if a['cpu']:
    c.grefel.update(CPU)
    c.data.image_size = 64
    c.data.train_examples = 4096
    c.data.eval_examples = 1000
    c.data.eval_sets = 'synthetic:lab:test'
    c.batch_size = 32
    c.train.epochs = 2.0
    c.train.ckpt_every = 128
    c.train.log_every = 16
    c.train.eval_every = -1
  if a['smoke']:
    fc.shrink_for_smoke(c)
    c.grefel.update(SMOKE)
  # Explicit arguments last, so that `smoke,epochs=N` keeps N.
  if a['arbex']:
    c.grefel.update(ARBEX)
  if a['epochs'] is not None:
    c.train.epochs = float(a['epochs'])
  if a['anchors'] is not None:
    c.grefel.num_anchors = int(a['anchors'])
  if a['rb'] is not None:
    c.grefel.rb = a['rb']
  return fc.finalize(c)
