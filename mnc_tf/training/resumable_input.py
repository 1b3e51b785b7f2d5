"""``fit`` input whose iterator exists before ``fit`` does, so that checkpoints can hold it.

:class:`ResumableInput` hands Keras 3's ``fit`` an iterator created up front; passed to
:class:`mnc_tf.training.checkpoints.BackupAndRestore` (``iterator=``), each checkpoint also
holds the input pipeline's position (shuffle order, augmentation random stream, epoch,
buffered elements), so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

# Keras exports no public base class for fit() inputs; this one is stable since Keras 3.0.
from keras.src.trainers.data_adapters.data_adapter import DataAdapter


class _Iterable(tf.distribute.DistributedDataset):
    """A distributed dataset (to Keras) whose ``iter()`` is one existing iterator."""

    def __init__(self, dataset, iterator):
        self._dataset = dataset
        self._iterator = iterator

    def __iter__(self):
        return self._iterator

    @property
    def element_spec(self):
        return self._dataset.element_spec

    def reduce(self, initial_state, reduce_func):
        raise NotImplementedError("ResumableInput only feeds fit()")


class ResumableInput(DataAdapter):
    """``fit`` input whose iterator exists before ``fit`` does, so checkpoints can hold it.

    Keras 3's ``fit`` calls ``iter()`` on its input itself and keeps that iterator private.
    This Keras data adapter (``fit`` takes adapters as they are) hands ``fit`` the iterator it
    created up front; pass :attr:`iterator` to :class:`BackupAndRestore` and the checkpoints
    carry the input pipeline's position. ``model.fit(ResumableInput(ds), steps_per_epoch=..)``.

    Args:
      dataset: a repeating ``tf.data.Dataset`` or a distributed dataset
        (``strategy.distribute_datasets_from_function``).

    Use one instance for one ``fit`` call (``fit`` continues from wherever the iterator is),
    inside ``with resumable.fitting(model):`` (see :meth:`fitting`).
    """

    def __init__(self, dataset):
        self._dataset = dataset
        self.iterator = iter(dataset)
        self._iterable = _Iterable(dataset, self.iterator)

    @contextlib.contextmanager
    def fitting(self, model):
        """Context for ``model.fit(self, ...)``: Keras' pre-fit build reads a separate iterator.

        Under a ``tf.distribute`` strategy scope Keras 3's ``fit`` first takes one batch from
        its input to build the model symbolically (``_maybe_symbolic_build``); from this input
        that batch would come off the checkpointed iterator, shifting the data by one batch
        per ``fit`` call. Here it comes from a throwaway iterator over the same dataset.
        """
        original = model._maybe_symbolic_build

        def build_from_a_separate_iterator(iterator=None, data_batch=None):
            if iterator is not None and data_batch is None:
                iterator = [(0, 0, iter(self._dataset))]  # Keras reads (begin, end, iterator)
            return original(iterator=iterator, data_batch=data_batch)

        model._maybe_symbolic_build = build_from_a_separate_iterator
        try:
            yield self
        finally:
            if model.__dict__.get("_maybe_symbolic_build") is build_from_a_separate_iterator:
                del model._maybe_symbolic_build
            else:
                model._maybe_symbolic_build = original

    @property
    def checkpointable(self):
        """Whether :attr:`iterator` can go into a ``tf.train.Checkpoint``: a ``tf.data``
        iterator can; TF 2.21's ``MirroredStrategy`` distributed iterator cannot."""
        return isinstance(self.iterator, tf.__internal__.tracking.Trackable)

    def get_tf_dataset(self):
        return self._iterable

    def get_numpy_iterator(self):
        raise NotImplementedError("ResumableInput feeds the TensorFlow backend's fit() only")

    get_jax_iterator = get_torch_dataloader = get_numpy_iterator

    @property
    def num_batches(self):
        cardinality = self._dataset.cardinality
        cardinality = int(cardinality() if callable(cardinality) else cardinality)
        return cardinality if cardinality >= 0 else None

    @property
    def batch_size(self):
        return None

    @property
    def has_partial_batch(self):
        return None

    @property
    def partial_batch_size(self):
        return None


def without_external_state_check(dataset):
    """``dataset`` with iterator checkpointing allowed despite its ``numpy_function`` loader.

    The COCO loader runs in ``tf.numpy_function`` (state outside the graph, for TensorFlow),
    so by default every iterator save logs "PyFunc is stateful". Its output depends only on
    its inputs (record index, flip), which the iterator state does hold; the only Python state
    is a count of decode errors.
    """
    options = tf.data.Options()
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return dataset.with_options(options)
