"""The train step on a device mesh: sharded, rematerialised and accumulated steps equal the plain one
(losses, gradients, parameters) from the first update on, up to the rounding of another order of
summation (tests/helpers.py derives the tolerances); the non-finite guard keeps the last good state; the
tensor axis really splits the weights."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mgjax.data import pretrain
from mgjax.models import functional, videomae
from mgjax.train import finetune as ft
from mgjax.train import optim, sharding, step as step_lib
from tests import helpers

CFG = videomae.ModelConfig(size='T', frames=4, image_size=32, mask_ratio=0.5, dtype='float32')
BATCH = 16
BATCH_NDIMS = {'video': 6, 'mask': 3}


def _batches(n, seed=0, same=False):
  rng = np.random.default_rng(seed)
  batch = None
  for _ in range(n):
    if batch is None or not same:
      batch = {'video': rng.integers(0, 256, (BATCH, 4, 32, 32, 3), dtype=np.uint8),
               'mask': np.stack([pretrain.tube_mask(rng, CFG.grid, CFG.mask_ratio) for _ in range(BATCH)])}
    yield batch


def _lr():
  # No warmup: the first update already runs at the peak rate, so every compared step moves the weights.
  return optim.schedule(base_lr=0.05, min_lr=1e-3, global_batch=BATCH, warmup_steps=0, total_steps=10)


def _adamw(lr, clip=0.0):
  return optim.make_optimizer(lr, b1=0.9, b2=0.95, weight_decay=0.05, clip_norm=clip)


def _sgd(lr, clip=0.0):
  """The comparisons' optimizer: SGD with momentum, whose update is linear in the gradients, so rounding
  differences stay rounding-sized in the parameters (AdamW's first updates are lr * sign(gradient)). The
  state's first part is the step's gradient, kept for comparison."""
  keep = optax.GradientTransformation(lambda p: jax.tree.map(jnp.zeros_like, p), lambda g, s, p=None: (g, g))
  return optax.chain(keep, *([optax.clip_by_global_norm(clip)] if clip else []), optax.sgd(lr, momentum=0.9))


SGD_LR = 0.5  # a step lowers the loss by about 0.25% here: later steps' gradients are at other parameters


def _record(state, m, out):
  for k in ('loss', 'grad_norm', 'lr'):
    out[k].append(float(m[k]))
  if isinstance(state['opt_state'], tuple) and isinstance(state['opt_state'][0], dict):  # _sgd
    out['grads'].append(jax.device_get(state['opt_state'][0]))


def _run(mesh, micro=1, steps=3, clip=0.0, cfg=CFG, same=False, drop_path=False, adamw=False):
  """(per-step loss, grad_norm, lr and, with SGD, gradients; initial and final parameters)."""
  fns = functional.ModelFns.create(cfg)
  lr = _lr()
  tx = _adamw(lr, clip) if adamw else _sgd(SGD_LR, clip)
  state, shardings = step_lib.create_state(fns, tx, mesh, seed=0)
  init = jax.device_get(state['params'])
  jitted, bsh = step_lib.jit_train_step(step_lib.make_train_step(fns, tx, lr, drop_path=drop_path), mesh,
                                        shardings, BATCH_NDIMS)
  out = {'loss': [], 'grad_norm': [], 'lr': [], 'grads': [], 'init': init}
  for i, host in enumerate(_batches(steps, same=same)):
    state, m = jitted(state, step_lib.to_global(host, micro, bsh), jax.random.key(i))
    _record(state, m, out)
  return out, jax.device_get(state['params'])


def _assert_same_run(got, want):
  """The same steps computed in two orders of summation: losses, gradient norms, every step's gradients and
  the parameters' total change, within the tolerances derived in tests/helpers.py."""
  (g, g_params), (w, w_params) = got, want
  np.testing.assert_allclose(g['loss'], w['loss'], rtol=helpers.LOSS_RTOL)
  np.testing.assert_allclose(g['grad_norm'], w['grad_norm'], rtol=helpers.GRAD_RTOL)
  assert len(g['grads']) == len(w['grads']) > 0
  for i, (a, b) in enumerate(zip(g['grads'], w['grads'])):
    helpers.assert_close_normwise(a, b, helpers.GRAD_RTOL, f'gradient of step {i + 1}')
  moved = lambda params, run: jax.tree.map(lambda p, p0: np.float64(p) - p0, params, run['init'])
  helpers.assert_close_normwise(moved(g_params, g), moved(w_params, w), helpers.GRAD_RTOL, 'parameter change')


def _one_device():
  return sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])


@pytest.fixture(scope='module')
def single():
  return _run(_one_device())


def test_first_update_runs_at_the_peak_rate():
  out, params = _run(_one_device(), steps=1, adamw=True)
  assert out['lr'][0] == pytest.approx(0.05 * BATCH / 256)
  moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in
           zip(jax.tree.leaves(params), jax.tree.leaves(out['init']))]
  assert min(moved) > 0  # every parameter, biases and norms included, changed


def test_it_learns_a_fixed_batch():
  out, _ = _run(_one_device(), steps=6, same=True, adamw=True)
  assert all(b < a for a, b in zip(out['loss'], out['loss'][1:])), out['loss']  # falls at every step
  assert out['loss'][-1] < 0.95 * out['loss'][0], out['loss']


@pytest.mark.parametrize('shape', [(8, 1, 1), (1, 8, 1), (2, 2, 2)])
def test_sharded_equals_single_device(single, shape):
  assert jax.device_count() == 8
  _assert_same_run(_run(sharding.make_mesh(shape)), single)


@pytest.mark.parametrize('micro,shape', [(4, (4, 1, 1)), (2, (1, 2, 4))])
def test_accumulation_equals_full_batch(single, micro, shape):
  devices = jax.devices()[:int(np.prod(shape))]
  _assert_same_run(_run(sharding.make_mesh(shape, devices), micro=micro), single)


@pytest.fixture(scope='module')
def with_drop_path():
  """Drop path on, so rematerialised blocks must also get the same random keys as plain ones."""
  cfg = dataclasses.replace(CFG, drop_path=0.2)
  return cfg, _run(sharding.make_mesh((2, 2, 2)), cfg=cfg, drop_path=True)


@pytest.mark.parametrize('remat', ['full', 'dots'])
def test_remat_equals_no_remat(with_drop_path, remat):
  cfg, plain = with_drop_path
  mesh = sharding.make_mesh((2, 2, 2))
  _assert_same_run(_run(mesh, cfg=dataclasses.replace(cfg, remat=remat), drop_path=True), plain)


def test_the_comparison_sees_drop_path(with_drop_path):
  """Remat that lost the drop-path keys would step without drop path: that must compare unequal."""
  cfg, plain = with_drop_path
  with pytest.raises(AssertionError):
    _assert_same_run(_run(sharding.make_mesh((2, 2, 2)), cfg=cfg, drop_path=False), plain)


def test_gradient_clipping_changes_the_update():
  """With SGD, whose update scales with the gradient (AdamW's hardly does), on one batch twice: clipped to
  a norm of 1e-3, the first update moves the loss a tenth of what it does unclipped, or less."""
  out, _ = _run(sharding.make_mesh((8, 1, 1)), steps=2, clip=1e-3, same=True)
  plain, _ = _run(sharding.make_mesh((8, 1, 1)), steps=2, same=True)
  assert out['loss'][0] == pytest.approx(plain['loss'][0], rel=helpers.LOSS_RTOL)
  assert out['grad_norm'][0] == pytest.approx(plain['grad_norm'][0], rel=helpers.GRAD_RTOL)  # before clipping
  assert abs(out['loss'][1] - out['loss'][0]) < 0.1 * abs(plain['loss'][1] - plain['loss'][0])


@pytest.mark.parametrize('shape', [(1, 1, 8), (1, 2, 4)])
def test_tensor_axis_splits_attention_and_mlp(shape):
  mesh = sharding.make_mesh(shape)
  t = shape[2]
  fns = functional.ModelFns.create(CFG)
  tx = optim.make_optimizer(0.1, b1=0.9, b2=0.95, weight_decay=0.0)
  state, _ = step_lib.create_state(fns, tx, mesh, seed=0)
  f = shape[1]
  block = state['params']['encoder']['blocks'][0]  # T: width 64, 2 heads, MLP 256
  want = {('attn', 'qkv', 'kernel'): (64 // f, 192 // t), ('attn', 'proj', 'kernel'): (64 // t, 64 // f),
          ('mlp', 'fc1', 'kernel'): (64 // f, 256 // t), ('mlp', 'fc1', 'bias'): (256 // t,),
          ('mlp', 'fc2', 'kernel'): (256 // t, 64 // f)}
  for path, shard_shape in want.items():
    x = block
    for k in path:
      x = x[k]
    assert x.addressable_shards[0].data.shape == shard_shape, path
    assert 'tensor' in jax.tree.leaves(tuple(x.sharding.spec)), path
  mu = state['opt_state'][0][0].mu['encoder']['blocks'][0]['mlp']['fc1']['kernel']
  assert mu.addressable_shards[0].data.shape == (64 // f, 256 // t)  # optimizer state follows


def test_fsdp_really_shards_parameters():
  mesh = sharding.make_mesh((1, 8, 1))
  fns = functional.ModelFns.create(videomae.ModelConfig(size='T', frames=4, image_size=32))
  tx = optim.make_optimizer(0.1, b1=0.9, b2=0.95, weight_decay=0.0)
  state, _ = step_lib.create_state(fns, tx, mesh, seed=0)
  kernel = state['params']['encoder']['blocks'][0]['mlp']['fc1']['kernel']  # (64, 256)
  assert kernel.addressable_shards[0].data.shape == (8, 256)
  mu = state['opt_state'][0][0].mu['encoder']['blocks'][0]['mlp']['fc1']['kernel']
  assert mu.addressable_shards[0].data.shape == (8, 256)


@jax.custom_vjp
def _nan_gradient(x, poison):
  """x, whose gradient is NaN where `poison` is set (and passes through otherwise)."""
  del poison
  return x


_nan_gradient.defvjp(lambda x, poison: (x, poison),
                     lambda poison, g: (jnp.where(poison, jnp.nan, g), None))


@pytest.mark.parametrize('where', ['loss', 'gradient'])
def test_non_finite_step_leaves_the_last_good_state(where):
  """Step 2 of 3 is poisoned (its loss, or only its gradient, is NaN): the state after it is the state
  after step 1, bit for bit, and step 3 trains on from there."""
  fns = functional.ModelFns.create(CFG)
  lr = _lr()
  tx = _adamw(lr)

  def loss(params, mb, key):
    poison = mb['poison'].any()
    if where == 'gradient':
      params = jax.tree.map(lambda p: _nan_gradient(p, poison), params)
    value = fns.loss(params, mb['video'], mb['mask'])
    return jnp.where(poison, jnp.nan, value) if where == 'loss' else value

  mesh = sharding.make_mesh((8, 1, 1))
  state, shardings = step_lib.create_state(fns, tx, mesh, seed=0)
  train_step = step_lib.make_train_step(fns, tx, lr, drop_path=False, loss=loss)
  jitted, bsh = step_lib.jit_train_step(train_step, mesh, shardings, {**BATCH_NDIMS, 'poison': 2})
  states, metrics = [], []
  for i, host in enumerate(_batches(3)):
    host = {**host, 'poison': np.full(BATCH, i == 1)}
    state, m = jitted(state, step_lib.to_global(host, 1, bsh), jax.random.key(i))
    states.append(jax.device_get(state))
    metrics.append(jax.device_get(m))
  assert [bool(m['finite']) for m in metrics] == [True, False, True]
  if where == 'gradient':
    assert np.isfinite(metrics[1]['loss']) and not np.isfinite(metrics[1]['grad_norm'])
  assert int(states[1]['step']) == 1
  for a, b in zip(jax.tree.leaves(states[1]), jax.tree.leaves(states[0])):
    np.testing.assert_array_equal(a, b)
  assert int(states[2]['step']) == 2
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(states[2]['params']))


def _finetune_run(micro, mixup, cutmix, steps=3, mesh=(8, 1, 1), seed=1):
  cfg = videomae.ModelConfig(size='T', frames=4, image_size=32, dtype='float32')
  fns = functional.ModelFns.create(cfg, 5, 1.0)
  tx = _sgd(SGD_LR)
  mesh = sharding.make_mesh(mesh, jax.devices()[:int(np.prod(mesh))])
  state, shardings = step_lib.create_state(fns, tx, mesh, seed=0)
  augment = types.SimpleNamespace(mixup=mixup, cutmix=cutmix, label_smoothing=0.1)
  jitted, bsh = step_lib.jit_train_step(ft.make_train_step(fns, tx, _lr(), augment, drop_path=False), mesh,
                                        shardings, {'video': 6, 'label': 2})
  rng = np.random.default_rng(seed)
  out = {'loss': [], 'grad_norm': [], 'lr': [], 'grads': [], 'init': jax.device_get(state['params'])}
  for i in range(steps):
    host = {'video': rng.integers(0, 256, (BATCH, 4, 32, 32, 3), dtype=np.uint8),
            'label': rng.integers(0, 5, BATCH).astype(np.int32)}
    state, m = jitted(state, step_lib.to_global(host, micro, bsh), jax.random.key(i))
    _record(state, m, out)
  return out, jax.device_get(state['params'])


@pytest.mark.parametrize('seed,micro,mesh', [(1, 2, (8, 1, 1)), (8, 2, (1, 1, 1))])
def test_finetune_accumulation_equals_full_batch_with_mixing(seed, micro, mesh):
  """Mixup / cutmix pairs clips across the whole global batch, before the micro-batch split. Data seed 8,
  2 micro-batches on 1 device against 8 devices: with AdamW, a weight of this case whose gradient is near
  zero moves by lr in opposite directions."""
  _assert_same_run(_finetune_run(micro, 0.8, 1.0, mesh=mesh, seed=seed),
                   _finetune_run(1, 0.8, 1.0, seed=seed))


def test_schedule_warmup_cosine_and_scaling():
  f = optim.schedule(base_lr=1.5e-4, min_lr=1e-5, global_batch=512, warmup_steps=10, total_steps=110)
  assert float(f(0)) == 0.0
  assert float(f(10)) == pytest.approx(3e-4)  # 1.5e-4 * 512 / 256
  assert float(f(110)) == pytest.approx(2e-5)
  assert float(f(5)) == pytest.approx(1.5e-4)
  assert float(optim.schedule(base_lr=1.5e-4, min_lr=1e-5, global_batch=512, warmup_steps=0,
                              total_steps=110)(0)) == pytest.approx(3e-4)
