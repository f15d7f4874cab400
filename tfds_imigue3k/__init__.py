"""TFDS builder for iMiGUE-3K (`imigue3k`): raw videos + the iMiGUE label file -> ArrayRecord records.

Importing this package registers the `imigue3k` builder with TFDS (as `tfds build --imports=tfds_imigue3k`
does). The builder module imports tensorflow_datasets but never TensorFlow.
"""

from tfds_imigue3k.imigue3k_dataset_builder import Builder, BuildError, Imigue3kConfig  # noqa: F401
