"""VideoMAE model: loss on a hand-computed case, tube masks, sizes, and ViT-L compiled with FSDP."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mgjax.data import pretrain
from mgjax.models import functional, videomae, vit
from mgjax.train import optim, sharding, step as step_lib, viz
from tests import helpers


def test_normalized_pixel_target_and_loss_by_hand():
  rng = np.random.default_rng(0)
  x = rng.random((1, 2, 16, 32, 3)).astype(np.float32)  # one tubelet (2 frames), two 16x16 patches
  t = np.asarray(videomae.normalized_pixel_target(jnp.asarray(x), patch=16, tubelet=2))
  assert t.shape == (1, 2, 1536)
  for tok, cols in enumerate((slice(0, 16), slice(16, 32))):
    patch = x[0, :, :, cols, :]  # (kt, p, p, C), the official (p0 p1 p2) c order
    flat = patch.reshape(-1, 3)  # 512 pixels x 3 channels
    want = (flat - flat.mean(0)) / (np.sqrt(flat.var(0, ddof=1)) + 1e-6)
    # numpy's formula against XLA's: tolerances as tests/helpers.py derives them
    np.testing.assert_allclose(t[0, tok], want.reshape(-1), rtol=1e-5, atol=1e-5)
  pred = t + np.array([1.0, -1.0])[None, :, None]  # off by 1 everywhere: MSE exactly 1
  assert float(videomae.loss_fn(jnp.asarray(pred), jnp.asarray(t))) == pytest.approx(1.0, rel=1e-6)
  assert float(videomae.loss_fn(jnp.asarray(t), jnp.asarray(t))) == 0.0


def test_target_token_order_on_a_grid_of_several_slots_rows_and_columns():
  """Tokens run t-major, then rows, then columns: 2 time slots x 2 rows x 3 columns, each checked by hand."""
  rng = np.random.default_rng(1)
  x = rng.random((1, 4, 32, 48, 3)).astype(np.float32)
  x[:, 2:] *= 0.5  # the time slots differ in scale, so a slot mixed up with another shows
  t = np.asarray(videomae.normalized_pixel_target(jnp.asarray(x), patch=16, tubelet=2))
  assert t.shape == (1, 12, 1536)
  for slot in range(2):
    for row in range(2):
      for col in range(3):
        patch = x[0, 2 * slot:2 * slot + 2, 16 * row:16 * row + 16, 16 * col:16 * col + 16, :]
        flat = patch.reshape(-1, 3)
        want = (flat - flat.mean(0)) / (np.sqrt(flat.var(0, ddof=1)) + 1e-6)
        np.testing.assert_allclose(t[0, slot * 6 + row * 3 + col], want.reshape(-1), rtol=1e-5, atol=1e-5)
  # The loss is the mean over masked tokens only: an error on one token of twelve, seen through a mask.
  pred = t.copy()
  pred[0, 7] += 2.0
  assert float(videomae.loss_fn(jnp.asarray(pred), jnp.asarray(t))) == pytest.approx(4.0 / 12, rel=1e-5)


def test_model_predicts_only_masked_tokens_against_their_targets():
  cfg = videomae.ModelConfig(size='T', frames=4, image_size=32, mask_ratio=0.5, dtype='float32')
  model = videomae.VideoMAE(cfg, rngs=nnx.Rngs(0))
  video = np.random.default_rng(1).integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
  mask = np.stack([pretrain.tube_mask(np.random.default_rng(i), cfg.grid, 0.5) for i in range(2)])
  pred, target = model(jnp.asarray(video), jnp.asarray(mask))
  assert pred.shape == target.shape == (2, cfg.num_masked, 1536) and cfg.num_masked == 4
  full = np.asarray(videomae.normalized_pixel_target(jnp.asarray(video / 255.0, jnp.float32), 16, 2))
  for i in range(2):
    np.testing.assert_allclose(np.asarray(target[i]), full[i, np.flatnonzero(mask[i])], atol=1e-5)


def test_dual_masking_decodes_and_scores_only_the_chosen_tokens():
  """With dual masking the decoder reconstructs the tokens marked 1 against their targets; the pixels of a
  token it leaves out (2) change nothing. Marking every masked token 1 is the model without it."""
  cfg0 = videomae.ModelConfig(size='T', frames=4, image_size=32, mask_ratio=0.5, dtype='float32')
  cfg = dataclasses.replace(cfg0, decoder_mask_ratio=0.5)
  assert (cfg0.num_masked, cfg.num_decoded) == (4, 2)
  model0, model = videomae.VideoMAE(cfg0, rngs=nnx.Rngs(0)), videomae.VideoMAE(cfg, rngs=nnx.Rngs(0))
  video = np.random.default_rng(1).integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
  mask = np.stack([pretrain.tube_mask(np.random.default_rng(i), cfg.grid, 0.5) for i in range(2)])
  dual = np.stack([pretrain.dual_mask(np.random.default_rng(i), m, cfg.grid, 0.5, 2) for i, m in enumerate(mask)])
  pred, target = model(jnp.asarray(video), jnp.asarray(dual))
  assert pred.shape == target.shape == (2, 2, 1536)
  full = np.asarray(videomae.normalized_pixel_target(jnp.asarray(video / 255.0, jnp.float32), 16, 2))
  for i in range(2):
    np.testing.assert_allclose(np.asarray(target[i]), full[i, np.flatnonzero(dual[i] == 1)], atol=1e-5)
  changed = vit.patchify(video, 16, 2).copy()  # a left-out token's pixels, then a decoded one's
  left_out, decoded = np.flatnonzero(dual[0] == 2)[0], np.flatnonzero(dual[0] == 1)[0]
  for token, moves in ((left_out, False), (decoded, True)):
    other = changed.copy()
    other[0, token] = 255 - other[0, token]
    other = viz._unpatchify(other, cfg)  # pylint: disable=protected-access
    p2, t2 = model(jnp.asarray(other), jnp.asarray(dual))
    np.testing.assert_array_equal(np.asarray(p2), np.asarray(pred))  # masked pixels never reach the model
    assert np.array_equal(np.asarray(t2), np.asarray(target)) != moves
  every = mask.astype(np.int8)  # every masked token decoded: the plain model's numbers
  for a, b in zip(model0(jnp.asarray(video), jnp.asarray(mask)), model0(jnp.asarray(video), jnp.asarray(every))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _reference_forward(model, video, mask):
  """The pretraining forward pass written the direct way: every token normalised and embedded, the
  visible ones gathered after the embedding, the target computed for every token and gathered after."""
  cfg = model.cfg
  order = jnp.argsort(mask.astype(jnp.int32), axis=1, stable=True)
  nv = cfg.num_tokens - cfg.num_masked
  visible, decoded = order[:, :nv], order[:, nv:nv + cfg.num_decoded]
  x = jnp.asarray(video, jnp.float32) / 255.0
  patches = vit.patchify((x - videomae.IMAGENET_MEAN) / videomae.IMAGENET_STD, cfg.patch, cfg.tubelet)
  embedded = jnp.take_along_axis(model.encoder.embed(patches), visible[..., None], axis=1)
  enc = model.encoder.norm(vit.run_blocks(model.encoder.blocks, embedded))
  y = model.encoder_to_decoder(enc)
  pos = jnp.asarray(vit.sinusoid_table(cfg.num_tokens, y.shape[-1]), y.dtype)
  y_mask = jnp.broadcast_to(model.mask_token[...].astype(y.dtype), (y.shape[0], cfg.num_decoded, y.shape[-1]))
  pred = model.decoder(jnp.concatenate([y + pos[visible], y_mask + pos[decoded]], axis=1), cfg.num_decoded)
  full = videomae.normalized_pixel_target(x, cfg.patch, cfg.tubelet)
  return pred.astype(jnp.float32), jnp.take_along_axis(full, decoded[..., None], axis=1)


@pytest.mark.parametrize('dtype,decoder_mask_ratio', [('float32', 0.0), ('bfloat16', 0.5)])
def test_gather_first_forward_gives_the_direct_forward_loss_and_gradients(dtype, decoder_mask_ratio):
  """The pretraining step embeds only the visible tokens and normalises only the decoded tokens' target
  (gathering uint8 pixels first); the loss and every gradient are the direct computation's, within
  float32 rounding, and within bfloat16's in bfloat16."""
  cfg = videomae.ModelConfig(size='T', frames=4, image_size=32, mask_ratio=0.5, dtype=dtype,
                             decoder_mask_ratio=decoder_mask_ratio)
  fns = functional.ModelFns.create(cfg)
  params = fns.init(0)
  video = np.random.default_rng(1).integers(0, 256, (4, 4, 32, 32, 3), dtype=np.uint8)
  mask = np.stack([pretrain.tube_mask(np.random.default_rng(i), cfg.grid, 0.5) for i in range(4)])
  if decoder_mask_ratio:
    mask = np.stack([pretrain.dual_mask(np.random.default_rng(i), m, cfg.grid, 0.5, cfg.num_decoded)
                     for i, m in enumerate(mask)])
  loss = lambda forward: jax.jit(jax.value_and_grad(
      lambda p, v, m: videomae.loss_fn(*forward(fns.module(p), v, m))))(params, video, mask)
  (got, g_got), (want, g_want) = loss(lambda m, v, k: m(v, k)), loss(_reference_forward)
  rtol = 1e-5 if dtype == 'float32' else 2e-2  # bfloat16 keeps 8 bits of mantissa
  np.testing.assert_allclose(float(got), float(want), rtol=rtol)
  helpers.assert_close_normwise(g_got, g_want, 1e-4 if dtype == 'float32' else 5e-2, 'gradients')


def test_tube_mask_shape_and_counts():
  grid = (8, 14, 14)
  m = pretrain.tube_mask(np.random.default_rng(3), grid, 0.9)
  assert m.shape == (1568,) and m.sum() == 1408 and (~m).sum() == 160
  slots = m.reshape(8, 196)
  assert (slots.sum(1) == 176).all() and (slots == slots[0]).all()  # same spatial mask in every slot
  other = pretrain.tube_mask(np.random.default_rng(4), grid, 0.9)
  assert not np.array_equal(m, other)
  assert videomae.ModelConfig(size='B').num_masked == 1408


def test_sinusoid_table_and_exact_gelu():
  t = vit.sinusoid_table(10, 8)
  assert t[3, 2] == pytest.approx(np.sin(3 / 10000 ** (2 / 8)), rel=1e-6)
  assert t[3, 3] == pytest.approx(np.cos(3 / 10000 ** (2 / 8)), rel=1e-6)
  mlp = vit.Mlp(4, 8, dtype=jnp.float32, rngs=nnx.Rngs(0))
  x = jnp.linspace(-3, 3, 8).reshape(2, 4)
  h = mlp.fc1(x)
  want = mlp.fc2(0.5 * h * (1 + jax.scipy.special.erf(h / np.sqrt(2))))
  np.testing.assert_allclose(mlp(x), want, atol=1e-6)


@pytest.mark.parametrize('size,encoder_m,total_m', [('B', 86.23, 94.21), ('L', 303.86, 343.00)])
def test_parameter_counts_match_official(size, encoder_m, total_m):
  m = nnx.eval_shape(lambda: videomae.VideoMAE(videomae.ModelConfig(size=size), rngs=nnx.Rngs(0)))
  assert videomae.count_params(m.encoder) / 1e6 == pytest.approx(encoder_m, abs=0.01)
  assert videomae.count_params(m) / 1e6 == pytest.approx(total_m, abs=0.01)


def test_auto_attention_is_cudnn_only_where_that_kernel_runs():
  pick = vit.resolve_attention
  assert pick('auto', jnp.bfloat16, 64, backend='gpu', capability='9.0') == 'cudnn'  # H100/H200
  assert pick('auto', jnp.float16, 80, backend='gpu', capability='8.0') == 'cudnn'  # A100, ViT-H heads
  assert pick('auto', jnp.float32, 64, backend='gpu', capability='9.0') == 'xla'  # no float32 kernel
  assert pick('auto', jnp.bfloat16, 64, backend='gpu', capability='7.0') == 'xla'  # V100
  assert pick('auto', jnp.bfloat16, 160, backend='gpu', capability='9.0') == 'xla'  # head too wide
  assert pick('auto', jnp.bfloat16, 64, backend='tpu') == 'xla'
  assert pick('auto', jnp.bfloat16, 64) == 'xla'  # this CPU
  assert pick('cudnn', jnp.float32, 64, backend='cpu') == 'cudnn'  # an explicit choice is kept


def test_weight_decay_skips_biases_norms_and_mask_token():
  fns = functional.ModelFns.create(videomae.ModelConfig(size='T', frames=4, image_size=32))
  mask = optim.decay_mask(jax.eval_shape(lambda: fns.init(0)))
  flat = {sharding.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
  assert flat['encoder/blocks/0/attn/qkv/kernel'] and flat['decoder/head/kernel']
  for name in ('encoder/blocks/0/attn/q_bias', 'encoder/blocks/0/norm1/scale', 'encoder/norm/bias',
               'mask_token', 'encoder/patch_embed/bias'):
    assert not flat[name], name


def test_vmae_l_compiles_on_8_devices_with_fsdp():
  """Compile only: the ViT-L train step with parameters and optimizer state sharded over 8 devices."""
  from configs import vmae_l  # pylint: disable=g-import-not-at-top
  config = vmae_l.get_config()
  cfg = videomae.ModelConfig(**config.model.to_dict())
  mesh = sharding.make_mesh((1, 8, 1))
  fns = functional.ModelFns.create(cfg)
  lr = optim.schedule(base_lr=1.5e-4, min_lr=1e-5, global_batch=8, warmup_steps=10, total_steps=100)
  tx = optim.make_optimizer(lr, b1=0.9, b2=0.95, weight_decay=0.05)
  abstract, _ = step_lib.abstract_state(fns, tx)
  shardings = step_lib.state_shardings(mesh, abstract)
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract['params']))
  assert n / 1e6 == pytest.approx(343.0, abs=0.01)
  qkv = shardings['params']['encoder']['blocks'][0]['attn']['qkv']['kernel']
  assert qkv.spec == jax.sharding.PartitionSpec('fsdp', None)  # (1024, 3072): the embed dim over fsdp
  jitted, batch_sh = step_lib.jit_train_step(step_lib.make_train_step(fns, tx, lr, drop_path=False), mesh,
                                             shardings, {'video': 6, 'mask': 3})
  state_in = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  batch = {'video': jax.ShapeDtypeStruct((1, 8, 16, 224, 224, 3), jnp.uint8, sharding=batch_sh['video']),
           'mask': jax.ShapeDtypeStruct((1, 8, 1568), jnp.bool_, sharding=batch_sh['mask'])}
  compiled = jitted.lower(state_in, batch, jax.random.key(0)).compile()
  mem = compiled.memory_analysis()
  # Parameters + Adam moments in float32, sharded 8 ways: about 343M * 12 bytes / 8 per device.
  assert mem.argument_size_in_bytes < 343e6 * 12 / 8 * 1.1 + 8 * 16 * 224 * 224 * 3
