"""The train step on a device mesh: sharded equals unsharded, accumulation equals the full batch."""

import jax
import numpy as np
import pytest

from mgjax.data import pretrain
from mgjax.models import videomae
from mgjax.train import optim, sharding, step as step_lib

CFG = videomae.ModelConfig(size='T', frames=4, image_size=32, mask_ratio=0.5, dtype='float32')
BATCH = 16


def _batches(n, seed=0):
  rng = np.random.default_rng(seed)
  for _ in range(n):
    yield {'video': rng.integers(0, 256, (BATCH, 4, 32, 32, 3), dtype=np.uint8),
           'mask': np.stack([pretrain.tube_mask(rng, CFG.grid, CFG.mask_ratio) for _ in range(BATCH)])}


def _run(mesh, micro=1, steps=3, clip=0.0):
  fns = step_lib.ModelFns.create(CFG)
  lr = optim.schedule(base_lr=0.05, min_lr=1e-3, global_batch=BATCH, warmup_steps=1, total_steps=10)
  tx = optim.make_optimizer(lr, b1=0.9, b2=0.95, weight_decay=0.05, clip_norm=clip)
  state, shardings = step_lib.create_state(fns, tx, mesh, seed=0)
  jitted, bsh = step_lib.jit_train_step(step_lib.make_train_step(fns, tx, lr, drop_path=False), mesh,
                                        shardings, {'video': 6, 'mask': 3})
  losses = []
  for host in _batches(steps):
    state, m = jitted(state, step_lib.to_global(host, micro, bsh), jax.random.key(0))
    losses.append(float(m['loss']))
  return losses, jax.device_get(state['params'])


@pytest.fixture(scope='module')
def single():
  return _run(sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1]))


@pytest.mark.parametrize('shape', [(8, 1, 1), (1, 8, 1), (2, 2, 2), (2, 4, 1)])
def test_sharded_equals_single_device(single, shape):
  assert jax.device_count() == 8
  losses, params = _run(sharding.make_mesh(shape))
  np.testing.assert_allclose(losses, single[0], rtol=2e-5)
  assert single[0][-1] < single[0][0]  # it learns
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(single[1])):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def test_fsdp_really_shards_parameters():
  mesh = sharding.make_mesh((1, 8, 1))
  fns = step_lib.ModelFns.create(videomae.ModelConfig(size='T', frames=4, image_size=32))
  tx = optim.make_optimizer(0.1, b1=0.9, b2=0.95, weight_decay=0.0)
  state, _ = step_lib.create_state(fns, tx, mesh, seed=0)
  kernel = state['params']['encoder']['blocks'][0]['mlp']['fc1']['kernel']  # (64, 256)
  assert kernel.addressable_shards[0].data.shape == (8, 256)
  mu = state['opt_state'][0][0].mu['encoder']['blocks'][0]['mlp']['fc1']['kernel']
  assert mu.addressable_shards[0].data.shape == (8, 256)


@pytest.mark.parametrize('micro,devices', [(2, 8), (4, 4)])
def test_accumulation_equals_full_batch(single, micro, devices):
  losses, params = _run(sharding.make_mesh((devices, 1, 1), jax.devices()[:devices]), micro=micro)
  np.testing.assert_allclose(losses, single[0], rtol=2e-5)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(single[1])):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def test_gradient_clipping_changes_the_update(single):
  losses, _ = _run(sharding.make_mesh((8, 1, 1)), clip=1e-3)
  assert losses[0] == pytest.approx(single[0][0], rel=1e-6) and losses[2] != pytest.approx(single[0][2])


def test_schedule_warmup_cosine_and_scaling():
  f = optim.schedule(base_lr=1.5e-4, min_lr=1e-5, global_batch=512, warmup_steps=10, total_steps=110)
  assert float(f(0)) == 0.0
  assert float(f(10)) == pytest.approx(3e-4)  # 1.5e-4 * 512 / 256
  assert float(f(110)) == pytest.approx(2e-5)
  assert float(f(5)) == pytest.approx(1.5e-4)
