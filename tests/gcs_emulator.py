"""A Google Cloud Storage server on 127.0.0.1 for the bucket tests: gcp-storage-emulator (in memory), with
the `x-goog-generation` header on object reads, which TensorStore (orbax's array writer) needs and the
emulator leaves out. gcsfs finds it through STORAGE_EMULATOR_HOST, TensorStore through
TENSORSTORE_GCS_HTTP_URL (`environment(port)`).

  python -m tests.gcs_emulator PORT BUCKET

`fail(env, match, count)` makes the server of `env` answer the next `count` reads of objects whose name
contains `match` with an error status (503 unless told), as a bucket does in an outage; `failures(env)`
says how many it has answered so.
"""

import json
import os
import sys
import tempfile
import threading


def environment(port: int) -> dict:
  url = f'http://127.0.0.1:{port}'
  # gcsfs's zonal/hierarchical bucket support asks the storage-control API, which the emulator lacks
  return {'STORAGE_EMULATOR_HOST': url, 'TENSORSTORE_GCS_HTTP_URL': url, 'GOOGLE_CLOUD_PROJECT': 'mgjax-test',
          'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false'}


def _faults_file(port: int) -> str:
  return os.path.join(tempfile.gettempdir(), f'mgjax_gcs_faults_{port}.json')


def _port(env: dict) -> int:
  return int(env['STORAGE_EMULATOR_HOST'].rsplit(':', 1)[1])


def fail(env: dict, match: str, count: int, status: int = 503):
  with open(_faults_file(_port(env)), 'w') as f:
    json.dump({'match': match, 'count': count, 'status': status, 'served': 0}, f)


def failures(env: dict) -> int:
  try:
    with open(_faults_file(_port(env))) as f:
      return json.load(f)['served']
  except FileNotFoundError:
    return 0


def serve(port: int, bucket: str):
  from http import HTTPStatus  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top
  download = objects.download
  lock = threading.Lock()

  def failing(name: str):
    """The status to answer a read of `name` with, or None to serve it."""
    with lock:
      try:
        with open(_faults_file(port)) as f:
          rule = json.load(f)
      except (FileNotFoundError, ValueError):
        return None
      if rule['count'] <= 0 or rule['match'] not in name:
        return None
      rule['count'] -= 1
      rule['served'] += 1
      with open(_faults_file(port) + '.tmp', 'w') as f:
        json.dump(rule, f)
      os.replace(_faults_file(port) + '.tmp', _faults_file(port))
      return HTTPStatus(rule['status'])

  def with_generation(request, response, storage, *args, **kwargs):
    status = failing(request.params['object_id'])
    if status is not None:
      response.status = status
      response.json({'error': {'code': status.value, 'message': status.phrase}})
      return
    try:
      obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
      response['x-goog-generation'] = str(obj['generation'])
      response['x-goog-metageneration'] = str(obj.get('metageneration', 1))
    except Exception:  # pylint: disable=broad-except  a missing object: download answers 404
      pass
    return download(request, response, storage, *args, **kwargs)

  if os.path.exists(_faults_file(port)):  # another server's, long gone
    os.remove(_faults_file(port))
  objects.download = with_generation  # before the server module builds its routes from it
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top
  server.create_server('127.0.0.1', port, in_memory=True, default_bucket=bucket).run()


if __name__ == '__main__':
  serve(int(sys.argv[1]), sys.argv[2])
