"""Files a run writes or reads beside the records (run files, metrics, pictures, results, the feature
cache, checkpoints and exported weights), through etils.epath: a local path, a path object, or a bucket
(gs://, s3://) alike. Buckets are read and written through fsspec (gcsfs, s3fs), never through TensorFlow:
`EPATH_USE_TF=false` is set when this module is imported, unless the environment says otherwise."""

from __future__ import annotations

import json
import os
import socket
import threading

os.environ.setdefault('EPATH_USE_TF', 'false')  # before epath picks a backend for gs:// (tf.io.gfile)

from etils import epath  # pylint: disable=g-import-not-at-top,wrong-import-position

from mgjax import errors  # pylint: disable=g-import-not-at-top,wrong-import-position


def path(p) -> epath.Path:
  return epath.Path(p)


def is_remote(p) -> bool:
  """A bucket (gs://, s3://, ...): no appends, no local file names."""
  return '://' in os.fspath(p)


def absolute(p) -> epath.Path:
  """p made absolute against the working directory; a bucket path as it is."""
  return path(p) if is_remote(p) else path(os.path.abspath(os.fspath(p)))


def writable_dir(p, flag: str) -> epath.Path:
  """p as a directory this process can write in, created with its parents if missing. A path that is a
  file or lies under one, or that cannot be created or written, is an errors.PathError naming `flag` and
  the path, raised before anything is written there. A bucket is checked by its first write."""
  if is_remote(p):
    check_bucket(p, flag)
    return path(p)
  p = absolute(p)
  where = f'{flag}={os.fspath(p)}'
  if p.exists() and not p.is_dir():
    raise errors.PathError(f'{where} is a file, not a directory: give a directory to write in')
  try:
    p.mkdir(parents=True, exist_ok=True)
    probe = p / f'.mgjax-write-check-{socket.gethostname()}-{os.getpid()}'
    probe.write_bytes(b'')
    probe.unlink()
  except OSError as e:
    raise errors.PathError(f'{where} cannot be written ({e.strerror or e}): give a directory you can write '
                           f'in') from None
  return p


BUCKET_TIMEOUT_S = 10.0


def check_bucket(p, flag: str, timeout: float = BUCKET_TIMEOUT_S):
  """The bucket of a gs:// (or s3://) path exists and answers within `timeout` seconds, else an
  errors.PathError naming the bucket and what to check. mgjax never creates a bucket: a mistyped name
  fails here instead of creating one where the credentials allow it. (The storage client retries for
  minutes without a network or credentials; this waits `timeout` seconds.)"""
  scheme, rest = os.fspath(p).split('://', 1)
  name = rest.split('/', 1)[0]
  bucket = f'{scheme}://{name}'
  answer = {}

  def ask():
    try:
      import fsspec  # pylint: disable=g-import-not-at-top
      fsspec.filesystem(scheme).info(name)
      answer['ok'] = True
    except BaseException as e:  # pylint: disable=broad-except  reported below, on the caller's thread
      answer['error'] = e

  asking = threading.Thread(target=ask, daemon=True)  # a hung request must not keep the process alive
  asking.start()
  asking.join(timeout)
  where = f'{flag}={os.fspath(p)}'
  if not answer:
    raise errors.PathError(f'{where}: no answer from {bucket} within {timeout:.0f} s: check the network and '
                           f'the credentials (gcloud auth application-default login)')
  e = answer.get('error')
  if isinstance(e, FileNotFoundError):
    raise errors.PathError(f'{where}: the bucket {bucket} does not exist (mgjax does not create buckets): '
                           f'correct the name or create the bucket')
  if e is not None:
    raise errors.PathError(f'{where}: cannot use the bucket {bucket} ({type(e).__name__}: '
                           f'{errors.first_line(e, 200)}): check the credentials (gcloud auth '
                           f'application-default login) and the network')


def write_atomic(p, write, binary: bool = False):
  """write(file) into p: written beside it, then renamed over it, so p is either its old self or complete.
  In a bucket, an object appears only once its upload finishes: it is written in place."""
  p = path(p)
  p.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(p):
    with p.open('wb' if binary else 'w') as f:
      write(f)
    return
  tmp = p.parent / (p.name + '.tmp')
  with tmp.open('wb' if binary else 'w') as f:
    write(f)
  tmp.replace(p)


def write_json(p, obj):
  write_atomic(p, lambda f: json.dump(obj, f, indent=2))


def read_json(p, default=None):
  p = path(p)
  if not p.exists():
    return default
  with p.open() as f:
    return json.load(f)
