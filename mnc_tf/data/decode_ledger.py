"""Counting the JPEGs that ``tf.io.decode_jpeg`` rejects after the Python loader passed them.

The loader (:meth:`mnc_tf.data.coco_source.CocoSource.load_tf`) checks a JPEG's header in
Python and hands its bytes to ``tf.io.decode_jpeg``, which runs without the GIL. A file
whose data is corrupt past a valid header fails there; ``ignore_errors`` drops the element
and the epoch goes on. :class:`DecodeLedger` finds out which element that was, so it can be
counted as ``corrupt_image`` in ``dataset.info`` and logged with its file.

Why a ledger with Python-side state (the simpler designs considered do not work):

- an ``ok`` flag in the element plus ``filter`` cannot carry a failure out of
  ``decode_jpeg``: a failing op fails the whole element, and TensorFlow has no op that
  decodes a JPEG or reports that it cannot;
- checking every JPEG fully in Python is the up-front ``verify_images=True`` (slow on big
  datasets) or a per-element decode holding the GIL, the cost the pipeline avoids;
- counting dropped elements per pass with a ``tf.Variable`` or ``reduce`` gives a number,
  not the file, and runs only when a pass ends (``repeat`` never ends one);
- a per-element sub-dataset (``interleave`` of ``from_tensors(x).map(decode)
  .ignore_errors()`` plus a marker, ``take(1)``) would see the failure in-graph, but it
  replaces the parallel map by an interleave of one-element datasets on every element.

So the loader records the position of every element it hands on, and a sequential map
after ``ignore_errors`` reports the positions that arrive: one recorded but skipped over
was dropped.
"""

from __future__ import annotations

import threading

import numpy as np
import tensorflow as tf


class DecodeLedger:
    """Counts the JPEGs that TensorFlow's decoder rejected after the loader passed them.

    The loader records the position (in the pass) of every element it hands on to the
    TF ops that finish it (``tf.io.decode_jpeg``, the flip); after
    ``ignore_errors``, elements arrive in order (the map is deterministic), so positions
    recorded but skipped over were dropped by an error in those ops.
    The end-of-pass sentinel (position of the last element + 1) settles the last ones; a
    position lower than the previous one starts a new pass. One ledger per pipeline; two
    iterators over one pipeline at the same time would confuse it (counts only). A pass
    abandoned early may leave a decode error uncounted, never counts one that did not
    happen.
    """

    def __init__(self, info):
        self._info = info
        self._lock = threading.Lock()
        self._pending = {}
        self._last = -1

    def sent(self, position, rec, encoded):
        with self._lock:
            self._pending[position] = (rec, encoded)

    def _settle(self, below):
        for position in sorted(p for p in self._pending if p < below):
            rec, encoded = self._pending.pop(position)
            if encoded:
                reason, why = "corrupt_image", "TensorFlow's JPEG decoder rejected the data"
            else:  # cannot happen with annotations checked when parsing; never silent
                reason, why = "load_error", "a TensorFlow op of the loader failed"
            self._info.count("skipped", reason, key=rec.image_id, detail=f"{rec.path}: {why}")

    def arrived(self, position):
        position = int(position)
        with self._lock:
            if position <= self._last:
                # A new iterator. The previous pass ended with its sentinel (everything
                # settled) or was abandoned: its entries past the last arrival were
                # prefetched but never consumed, not failed. (The new pass's first entries
                # are below the sentinel's position, so they stay.)
                for stale in [p for p in self._pending if p > self._last]:
                    del self._pending[stale]
            self._settle(position)
            self._pending.pop(position, None)
            self._last = position
        return np.bool_(True)

    def arrived_tf(self, example):
        done = tf.numpy_function(self.arrived, [example["position"]], tf.bool, stateful=True)
        with tf.control_dependencies([done]):
            return {k: tf.identity(v) if k == "ok" else v for k, v in example.items()}


def end_of_pass_sentinel(element_spec):
    """One element with record index -1 (the loader returns a not-ok element for it)."""
    return tf.data.Dataset.from_tensors(
        tf.nest.map_structure(lambda spec: tf.constant(-1, spec.dtype), element_spec)
    )
