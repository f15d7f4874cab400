"""A Google Cloud Storage server on 127.0.0.1 for the bucket tests: gcp-storage-emulator (in memory), with
the `x-goog-generation` header on object reads, which TensorStore (orbax's array writer) needs and the
emulator leaves out. gcsfs finds it through STORAGE_EMULATOR_HOST, TensorStore through
TENSORSTORE_GCS_HTTP_URL (`environment(port)`).

  python -m tests.gcs_emulator PORT BUCKET
"""

import sys


def environment(port: int) -> dict:
  url = f'http://127.0.0.1:{port}'
  # gcsfs's zonal/hierarchical bucket support asks the storage-control API, which the emulator lacks
  return {'STORAGE_EMULATOR_HOST': url, 'TENSORSTORE_GCS_HTTP_URL': url, 'GOOGLE_CLOUD_PROJECT': 'mgjax-test',
          'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false'}


def serve(port: int, bucket: str):
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top
  download = objects.download

  def with_generation(request, response, storage, *args, **kwargs):
    try:
      obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
      response['x-goog-generation'] = str(obj['generation'])
      response['x-goog-metageneration'] = str(obj.get('metageneration', 1))
    except Exception:  # pylint: disable=broad-except  a missing object: download answers 404
      pass
    return download(request, response, storage, *args, **kwargs)

  objects.download = with_generation  # before the server module builds its routes from it
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top
  server.create_server('127.0.0.1', port, in_memory=True, default_bucket=bucket).run()


if __name__ == '__main__':
  serve(int(sys.argv[1]), sys.argv[2])
