"""Files a run writes or reads beside the records (run files, metrics, pictures, results, the feature
cache), through etils.epath: a local path, a path object, or a bucket (gs://...) alike."""

from __future__ import annotations

import json

from etils import epath


def path(p) -> epath.Path:
  return epath.Path(p)


def write_atomic(p, write, binary: bool = False):
  """write(file) into p: written beside it, then renamed over it, so p is either its old self or complete."""
  p = path(p)
  p.parent.mkdir(parents=True, exist_ok=True)
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
