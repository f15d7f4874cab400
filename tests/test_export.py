"""Export to transformers / the official layout / orbax: loading without missing or unexpected keys,
output parity with transformers in float32, exact round trips, and clear errors."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import VideoMAEForPreTraining, VideoMAEForVideoClassification, VideoMAEModel

from mgjax import layout
from mgjax import weights
from mgjax.data import pretrain
from mgjax.models import classifier as classifier_lib
from mgjax.models import convert, videomae
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def workdir(pretrain_run):
  return pretrain_run


def _inputs(model: videomae.ModelConfig, n=2):
  rng = np.random.default_rng(7)
  video = rng.integers(0, 256, (n, model.frames, model.image_size, model.image_size, 3), dtype=np.uint8)
  x = (video / 255.0 - videomae.IMAGENET_MEAN) / videomae.IMAGENET_STD
  pixels = torch.tensor(x.transpose(0, 1, 4, 2, 3), dtype=torch.float32)  # transformers: (B, T, C, H, W)
  mask = np.stack([pretrain.tube_mask(rng, model.grid, model.mask_ratio) for _ in range(n)])
  return video, pixels, mask


def _no_missing_or_unexpected(info):
  return not info['missing_keys'] and not info['unexpected_keys'] and not info.get('mismatched_keys')


def test_hf_export_loads_in_transformers_and_matches(workdir, tmp_path):
  w = weights.load(workdir)
  assert w.model.size == 'T' and w.num_classes is None
  out = str(tmp_path / 'hf')
  weights.write(w, 'hf', out)
  pre, info = VideoMAEForPreTraining.from_pretrained(out, output_loading_info=True)
  assert _no_missing_or_unexpected(info), info
  enc, info = VideoMAEModel.from_pretrained(os.path.join(out, 'encoder'), output_loading_info=True)
  assert _no_missing_or_unexpected(info), info
  cfg = dataclasses_replace_f32(w.model)
  model = nnx.merge(*_split_with(videomae.VideoMAE(cfg, rngs=nnx.Rngs(0)), w.params))
  video, pixels, mask = _inputs(cfg)
  with torch.no_grad():
    hidden = enc(pixel_values=pixels).last_hidden_state.numpy()
    logits = pre(pixel_values=pixels, bool_masked_pos=torch.tensor(mask)).logits.numpy()
  x = (video / 255.0 - videomae.IMAGENET_MEAN) / videomae.IMAGENET_STD
  from mgjax.models import vit  # pylint: disable=g-import-not-at-top
  ours = np.asarray(model.encoder(vit.patchify(jnp.asarray(x, jnp.float32), cfg.patch, cfg.tubelet)))
  np.testing.assert_allclose(hidden, ours, atol=helpers.FORWARD_ATOL, rtol=helpers.FORWARD_RTOL)
  pred, _ = model(jnp.asarray(video), jnp.asarray(mask))
  np.testing.assert_allclose(logits, np.asarray(pred), atol=helpers.FORWARD_ATOL, rtol=helpers.FORWARD_RTOL)
  # Every attention layer really got its q and v biases (not left at zero by a renaming).
  q = enc.encoder.layer[0].attention.attention.query.bias.detach().numpy()
  np.testing.assert_array_equal(q, np.asarray(w.params['encoder']['blocks'][0]['attn']['q_bias']))
  assert np.abs(q).sum() > 0


def dataclasses_replace_f32(model):
  import dataclasses  # pylint: disable=g-import-not-at-top
  return dataclasses.replace(model, dtype='float32')


def _split_with(module, params):
  graphdef, state = nnx.split(module)
  nnx.replace_by_pure_dict(state, params)
  return graphdef, state


@pytest.mark.parametrize('fmt', ['hf', 'official', 'orbax'])
def test_round_trip_is_exact(workdir, tmp_path, fmt):
  w = weights.load(workdir)
  out = str(tmp_path / fmt)
  weights.write(w, fmt, out)
  back = weights.load(out)
  want = w.params if fmt != 'orbax' else {'encoder': w.params['encoder']}
  assert back.model == w.model and back.encoder_only == (fmt == 'orbax')
  flat_a, flat_b = convert.flatten(want), convert.flatten(back.params)
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_array_equal(flat_a[k], flat_b[k], err_msg=k)
  # And through the command line, from the exported directory to another format.
  cli = subprocess.run([sys.executable, '-m', 'mgjax.export', f'--checkpoint={out}', '--format=official',
                        f'--out={tmp_path / "again"}'], cwd=REPO, capture_output=True, text=True)
  assert cli.returncode == 0, cli.stderr[-2000:]
  again = weights.load(str(tmp_path / 'again'))
  assert again.encoder_only == (fmt == 'orbax')
  flat_c = convert.flatten(again.params)
  assert flat_c.keys() == flat_a.keys()
  for k, v in flat_c.items():
    np.testing.assert_array_equal(v, flat_a[k], err_msg=k)


def test_official_layout_keys_and_pth(workdir, tmp_path):
  w = weights.load(workdir)
  out = str(tmp_path / 'official')
  weights.write(w, 'official', out)
  sd = torch.load(os.path.join(out, 'model.pth'))['model']
  d = videomae.SIZES['T'].dim
  assert tuple(sd['encoder.patch_embed.proj.weight'].shape) == (d, 3, 2, 16, 16)
  assert tuple(sd['encoder.blocks.0.attn.qkv.weight'].shape) == (3 * d, d)
  assert 'encoder.blocks.0.attn.q_bias' in sd and 'encoder.blocks.0.attn.qkv.bias' not in sd
  assert 'encoder_to_decoder.weight' in sd and 'encoder_to_decoder.bias' not in sd
  assert tuple(sd['mask_token'].shape) == (1, 1, videomae.SIZES['T'].decoder_dim)
  assert not any('pos_embed' in k for k in sd)


def test_classifier_exports_to_video_classification(tmp_path):
  cfg = videomae.ModelConfig(size='T', frames=4, image_size=32, dtype='float32')
  model = classifier_lib.VideoClassifier(cfg, 32, init_scale=1.0, rngs=nnx.Rngs(3))
  params = nnx.state(model, nnx.Param).to_pure_dict()
  w = weights.Weights(params, cfg, num_classes=32)
  out = str(tmp_path / 'hf_cls')
  weights.write(w, 'hf', out)
  hf, info = VideoMAEForVideoClassification.from_pretrained(out, output_loading_info=True)
  assert _no_missing_or_unexpected(info), info
  video, pixels, _ = _inputs(cfg)
  with torch.no_grad():
    logits = hf(pixel_values=pixels).logits.numpy()
  np.testing.assert_allclose(logits, np.asarray(model(jnp.asarray(video))), atol=helpers.FORWARD_ATOL,
                             rtol=helpers.FORWARD_RTOL)
  back = weights.load(out)
  for k, v in convert.flatten(back.params).items():
    np.testing.assert_array_equal(v, np.asarray(convert.flatten(params)[k]), err_msg=k)
  official = convert.to_official(params)
  assert 'fc_norm.weight' in official and 'head.weight' in official and 'blocks.0.attn.qkv.weight' in official


def test_transformers_video_classification_pipeline_names_micro_gestures(tmp_path):
  """An hf export of a classifier runs in transformers' video-classification pipeline as it is: the
  pipeline reads a video file with its image processor (preprocessor_config.json) and names the classes
  as iMiGUE does (classes.tsv). The head is biased towards class 5, which the pipeline must name first."""
  from transformers import pipeline  # pylint: disable=g-import-not-at-top
  cfg = videomae.ModelConfig(size='T', frames=4, image_size=32, dtype='float32')
  params = nnx.state(classifier_lib.VideoClassifier(cfg, 32, init_scale=1.0, rngs=nnx.Rngs(3)),
                     nnx.Param).to_pure_dict()
  params['head']['bias'] = np.asarray(params['head']['bias']).copy()
  params['head']['bias'][5] = 50.0
  out = str(tmp_path / 'hf_cls')
  weights.write(weights.Weights(params, cfg, num_classes=32), 'hf', out)
  clip = str(tmp_path / 'clip.mp4')
  helpers.write_video(clip, 24, width=64, height=48)
  classify = pipeline('video-classification', model=out)
  got = classify(clip, top_k=3)
  names = weights.class_names()
  assert got[0]['label'] == names[5] == 'Covering face', got
  assert all(g['label'] in names for g in got) and got[0]['score'] > 0.99
  assert json.load(open(os.path.join(out, 'encoder', 'preprocessor_config.json')))['crop_size'] == {
      'height': 32, 'width': 32}


def test_errors_name_the_path_or_the_parameters(workdir, tmp_path):
  with pytest.raises(layout.CheckpointError, match='no such checkpoint: .*nowhere'):
    weights.load(str(tmp_path / 'nowhere'))
  unfinished = tmp_path / 'run' / 'checkpoints' / '7.orbax-checkpoint-tmp-123'
  unfinished.mkdir(parents=True)
  with pytest.raises(layout.CheckpointError, match='unfinished checkpoint'):
    weights.load(str(unfinished))
  with pytest.raises(layout.CheckpointError, match='has no finished checkpoint'):
    weights.load(str(tmp_path / 'run'))
  # One step directory copied on its own loads: it carries the model it holds (its model/ item).
  step = os.path.join(workdir, 'checkpoints', '2')
  copied = tmp_path / 'copied'
  shutil.copytree(step, copied)
  here, there = weights.load(workdir), weights.load(str(copied))
  assert (here.model, here.num_classes) == (there.model, there.num_classes)
  for k, v in convert.flatten(here.params).items():
    np.testing.assert_array_equal(v, convert.flatten(there.params)[k], err_msg=k)
  # The model item of one size over the weights of another (the item says XS, the weights are T).
  item_file = copied / 'model' / layout.MODEL_ITEM_FILE
  item = json.load(open(item_file))
  item['model']['size'] = 'XS'
  json.dump(item, open(item_file, 'w'))
  with pytest.raises(convert.WeightsError) as err:
    weights.load(str(copied))
  msg = str(err.value)
  assert msg.startswith(f'{copied}: weights do not fit the model') and '26 missing' in msg, msg
  assert 'decoder/blocks/0/attn/qkv/kernel: read (32, 96), model (64, 192)' in msg, msg
  # A step without the item takes the model from its workdir's config.json; copied on its own, it says
  # what is missing.
  shutil.rmtree(copied / 'model')
  with pytest.raises(layout.CheckpointError, match=f'{copied} has no model/ item and .*config.json is missing'):
    weights.load(str(copied))
  old = tmp_path / 'old'
  shutil.copytree(copied, old / 'checkpoints' / '2')
  shutil.copy(os.path.join(workdir, 'config.json'), old / 'config.json')
  assert weights.load(str(old)).model == here.model
  sd = convert.to_official(weights.load(workdir).params)
  with pytest.raises(convert.WeightsError, match=r'48 wrong shape: .*decoder.blocks.0.attn.qkv.weight: read \(96, 32\), model \(192, 64\)'):
    convert.from_official(sd, weights.template(videomae.ModelConfig(size='XS', frames=4, image_size=32)))


def test_foreign_transformers_and_official_files_load(workdir, tmp_path):
  """Checkpoints mgjax did not write: a transformers directory (as saved by transformers itself) and an
  official .pth file, both usable as fine-tuning init."""
  w = weights.load(workdir)
  hf_dir = str(tmp_path / 'hf')
  weights.write(w, 'hf', hf_dir)
  model = VideoMAEForPreTraining.from_pretrained(hf_dir)
  saved = str(tmp_path / 'saved_by_transformers')
  model.save_pretrained(saved)  # transformers' own layout (5.x names), no mgjax_model.json
  assert not os.path.exists(os.path.join(saved, weights.MODEL_JSON))
  back = weights.load(saved)
  assert back.model.size == 'T' and back.model.frames == w.model.frames
  for k, v in convert.flatten(back.params).items():
    np.testing.assert_array_equal(v, convert.flatten(w.params)[k], err_msg=k)
  enc = weights.load(os.path.join(hf_dir, 'encoder'))  # a VideoMAEModel directory: the encoder
  assert enc.encoder_only
  official = str(tmp_path / 'official')
  weights.write(w, 'official', official)
  from_pth = weights.load(os.path.join(official, 'model.pth'), frames=w.model.frames,
                         image_size=w.model.image_size)
  shape = lambda m: (m.size, m.frames, m.image_size, m.patch, m.tubelet, m.decoder_depth)
  assert shape(from_pth.model) == shape(w.model)
  for k, v in convert.flatten(from_pth.params).items():
    np.testing.assert_array_equal(v, convert.flatten(w.params)[k], err_msg=k)


def test_decoder_width_exports_loads_and_matches(tmp_path):
  """A decoder of another width than the size's (model.decoder_width): transformers loads it with no
  missing keys and the same outputs, and transformers' own directory and the official file load back with
  the width read from the weights."""
  cfg = videomae.ModelConfig(size='T', frames=4, image_size=32, dtype='float32', mask_ratio=0.5,
                             decoder_width=48)
  assert cfg.decoder == (48, 3, 1)  # the T decoder's head width 16 kept: 3 heads
  model = videomae.VideoMAE(cfg, rngs=nnx.Rngs(5))
  params = nnx.state(model, nnx.Param).to_pure_dict()
  assert params['mask_token'].shape == (1, 1, 48)
  w = weights.Weights(params, cfg)
  out = str(tmp_path / 'hf')
  weights.write(w, 'hf', out)
  pre, info = VideoMAEForPreTraining.from_pretrained(out, output_loading_info=True)
  assert _no_missing_or_unexpected(info), info
  assert pre.config.decoder_hidden_size == 48 and pre.config.decoder_num_attention_heads == 3
  video, pixels, mask = _inputs(cfg)
  with torch.no_grad():
    logits = pre(pixel_values=pixels, bool_masked_pos=torch.tensor(mask)).logits.numpy()
  pred, _ = model(jnp.asarray(video), jnp.asarray(mask))
  np.testing.assert_allclose(logits, np.asarray(pred), atol=helpers.FORWARD_ATOL, rtol=helpers.FORWARD_RTOL)
  saved = str(tmp_path / 'saved_by_transformers')
  pre.save_pretrained(saved)
  official = str(tmp_path / 'official')
  weights.write(w, 'official', official)
  for back in (weights.load(saved), weights.load(os.path.join(official, 'model.safetensors'), frames=4,
                                                          image_size=32)):
    assert back.model.decoder_width == 48
    for k, v in convert.flatten(back.params).items():
      np.testing.assert_array_equal(v, np.asarray(convert.flatten(params)[k]), err_msg=k)
  cfg_json = json.load(open(os.path.join(saved, 'config.json')))
  cfg_json['decoder_num_attention_heads'] = 2  # heads of width 24: not what mgjax's T decoder computes
  json.dump(cfg_json, open(os.path.join(saved, 'config.json'), 'w'))
  with pytest.raises(convert.WeightsError,
                     match=r'saved_by_transformers: decoder_num_attention_heads 2, but .* 3 heads'):
    weights.load(saved)
  with pytest.raises(ValueError, match='model.decoder_width=40: not a positive multiple of .*16'):
    videomae.ModelConfig(size='T', decoder_width=40)


# ---- parity on weights far from their initial values ------------------------------------------------------

RANDOM_CFG = videomae.ModelConfig(size='T', frames=4, image_size=32, mask_ratio=0.5, dtype='float32')


def _randomized(params, seed):
  """Every parameter moved far from its initialisation: norm scales random around 1, every bias (q and v
  biases included) random, kernels and tokens with noise of their own scale added."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, x in convert.flatten(params).items():
    x = np.asarray(x, np.float32)
    if name.endswith('/scale'):
      out[name] = (1 + 0.5 * rng.standard_normal(x.shape)).astype(np.float32)
    elif name.endswith('bias'):
      out[name] = (0.5 * rng.standard_normal(x.shape)).astype(np.float32)
    else:
      out[name] = (x + (x.std() + 0.02) * rng.standard_normal(x.shape)).astype(np.float32)
  return convert.unflatten(out)


def _random_models():
  pre = videomae.VideoMAE(RANDOM_CFG, rngs=nnx.Rngs(1))
  pre_params = _randomized(nnx.state(pre, nnx.Param).to_pure_dict(), 0)
  cls = classifier_lib.VideoClassifier(RANDOM_CFG, 5, rngs=nnx.Rngs(2))
  cls_params = _randomized(nnx.state(cls, nnx.Param).to_pure_dict(), 1)
  return (nnx.merge(*_split_with(pre, pre_params)), pre_params), (nnx.merge(*_split_with(cls, cls_params)),
                                                                  cls_params)


def test_transformers_parity_on_random_weights(tmp_path):
  """Encoder states, pretraining predictions, transformers' own normalised-pixel loss and classifier
  logits, all from weights where a misplaced bias or norm would show."""
  (pre, pre_params), (cls, cls_params) = _random_models()
  out = str(tmp_path / 'pre')
  weights.write(weights.Weights(pre_params, RANDOM_CFG), 'hf', out)
  hf_pre = VideoMAEForPreTraining.from_pretrained(out)
  hf_enc = VideoMAEModel.from_pretrained(os.path.join(out, 'encoder'))
  video, pixels, mask = _inputs(RANDOM_CFG, n=3)
  with torch.no_grad():
    hidden = hf_enc(pixel_values=pixels).last_hidden_state.numpy()
    res = hf_pre(pixel_values=pixels, bool_masked_pos=torch.tensor(mask))
  from mgjax.models import vit  # pylint: disable=g-import-not-at-top
  x = (video / 255.0 - videomae.IMAGENET_MEAN) / videomae.IMAGENET_STD
  patches = vit.patchify(jnp.asarray(x, jnp.float32), RANDOM_CFG.patch, RANDOM_CFG.tubelet)
  ours = np.asarray(pre.encoder(patches))
  assert np.abs(ours).max() > 1  # far from a near-identity network
  np.testing.assert_allclose(hidden, ours, atol=helpers.FORWARD_ATOL, rtol=helpers.FORWARD_RTOL)
  pred, target = pre(jnp.asarray(video), jnp.asarray(mask))
  np.testing.assert_allclose(res.logits.numpy(), np.asarray(pred), atol=helpers.FORWARD_ATOL, rtol=helpers.FORWARD_RTOL)
  assert float(res.loss) == pytest.approx(float(videomae.loss_fn(pred, target)), rel=helpers.LOSS_RTOL)
  out = str(tmp_path / 'cls')
  weights.write(weights.Weights(cls_params, RANDOM_CFG, num_classes=5), 'hf', out)
  hf_cls = VideoMAEForVideoClassification.from_pretrained(out)
  with torch.no_grad():
    logits = hf_cls(pixel_values=pixels).logits.numpy()
  np.testing.assert_allclose(logits, np.asarray(cls(jnp.asarray(video))), atol=helpers.FORWARD_ATOL,
                             rtol=helpers.FORWARD_RTOL)


def test_official_layout_loads_into_modules_built_from_official_names(tmp_path):
  """The official export read back with load_state_dict(strict=True) into PyTorch modules named as the
  official code names them, pretraining and fine-tuned, with the same outputs; the fine-tuned file also
  wrapped as DeepSpeed ('module') and Lightning ('state_dict') write it."""
  from tests import torch_reference as ref  # pylint: disable=g-import-not-at-top
  (pre, pre_params), (cls, cls_params) = _random_models()
  t = videomae.SIZES['T']
  dim, depth, heads = t.dim, t.depth, t.heads
  ddim, dheads, ddepth = RANDOM_CFG.decoder
  n = RANDOM_CFG.num_tokens
  video, pixels, mask = _inputs(RANDOM_CFG, n=3)
  pixels = pixels.permute(0, 2, 1, 3, 4)  # official: (B, C, T, H, W)
  for params, num_classes in ((pre_params, None), (cls_params, 5)):
    out = str(tmp_path / ('cls' if num_classes else 'pre'))
    weights.write(weights.Weights(params, RANDOM_CFG, num_classes=num_classes), 'official', out)
    sd = torch.load(os.path.join(out, 'model.pth'))['model']
    if num_classes:
      module = ref.FinetunedVideoMAE(dim, depth, heads, 16, 2, n, num_classes)
    else:
      module = ref.PretrainVideoMAE(dim, depth, heads, ddim, ddepth, dheads, 16, 2, n)
    module.load_state_dict(sd, strict=True)
    with torch.no_grad():
      got = (module(pixels) if num_classes else module(pixels, torch.tensor(mask))).numpy()
    want = cls(jnp.asarray(video)) if num_classes else pre(jnp.asarray(video), jnp.asarray(mask))[0]
    np.testing.assert_allclose(got, np.asarray(want), atol=helpers.FORWARD_ATOL, rtol=helpers.FORWARD_RTOL)
  for wrapper in ('module', 'state_dict'):
    path = str(tmp_path / f'{wrapper}.pth')
    torch.save({wrapper: sd, 'epoch': 3}, path)
    back = weights.load(path, frames=RANDOM_CFG.frames, image_size=RANDOM_CFG.image_size)
    assert back.num_classes == 5 and back.model.size == 'T'
    for k, v in convert.flatten(back.params).items():
      np.testing.assert_array_equal(v, convert.flatten(cls_params)[k], err_msg=(wrapper, k))


def test_h_size_exports_every_transformers_and_official_name_with_its_shape():
  """ViT-H (1280 wide, 32 blocks, 80-wide heads, a 12-block decoder), checked on shapes only: the
  transformers model and the official-named PyTorch module are built on the meta device (no memory)."""
  from tests import torch_reference as ref  # pylint: disable=g-import-not-at-top
  from transformers import VideoMAEConfig  # pylint: disable=g-import-not-at-top
  cfg = videomae.ModelConfig(size='H')
  tmpl = weights.template(cfg)
  zeros = jax.tree.map(lambda a: np.broadcast_to(np.zeros((), np.int8), a.shape), tmpl)
  hf_cfg = weights.hf_config(cfg, None)
  with torch.device('meta'):
    hf = VideoMAEForPreTraining(VideoMAEConfig(**hf_cfg))
    official = ref.PretrainVideoMAE(1280, 32, 16, 640, 12, 8, 16, 2, cfg.num_tokens)
  want = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
  # transformers 5 holds the q / v biases as query.bias / value.bias; the export writes the legacy names
  want = {k.replace('query.bias', 'q_bias').replace('value.bias', 'v_bias'): v for k, v in want.items()}
  got = {k: tuple(v.shape) for k, v in convert.to_hf(zeros).items()}
  assert got == want
  want = {k: tuple(v.shape) for k, v in official.state_dict().items()}
  assert {k: tuple(v.shape) for k, v in convert.to_official(zeros).items()} == want
  assert hf_cfg['hidden_size'] == 1280 and hf_cfg['num_attention_heads'] == 16
  assert hf_cfg['decoder_num_hidden_layers'] == 12 and hf_cfg['decoder_hidden_size'] == 640
