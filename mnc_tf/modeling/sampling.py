"""Random selection used by the anchor labeller (stage 1) and the RoI sampler (stage 2).

All randomness comes from per-image stateless streams: ``seeds [B, 2]`` (built by
:func:`image_seeds`) plus a per-sampler ``salt``. With ``deterministic_sampling`` the seed of
an image depends only on (``sampling_seed``, training step, image id), so results do not depend
on which replica or batch position an image lands in.
"""

import tensorflow as tf

# Salts keep the streams of different samplers independent for the same image.
SALT_ANCHORS = 1
SALT_ROIS = 2


def image_seeds(batch_size, step, sampling_seed, deterministic, image_ids=None, gt_boxes=None):
    """Per-image stateless seeds.

    Args:
      batch_size: scalar int (local batch).
      step: scalar int (e.g. ``optimizer.iterations``).
      sampling_seed: python int from the config.
      deterministic: if False the image part of the seed is drawn from the global RNG.
      image_ids: optional int ``[B]`` (the dataset's ``image_id``).
      gt_boxes: float32 ``[B, N, 4]`` used as a fingerprint when ``image_ids`` is None.

    Returns:
      int64 ``[B, 2]``.
    """
    step = tf.cast(step, tf.int64)
    if not deterministic:
        key = tf.random.uniform([batch_size], maxval=2**31 - 1, dtype=tf.int64)
    elif image_ids is not None:
        key = tf.cast(image_ids, tf.int64)
    elif gt_boxes is not None:
        # A content fingerprint: identical images get identical streams wherever they land.
        w = tf.constant([1.0, 3.0, 7.0, 13.0], tf.float32)
        key = tf.cast(tf.reduce_sum(tf.abs(gt_boxes) * w, axis=[1, 2]) * 64.0, tf.int64)
    else:
        key = tf.zeros([batch_size], tf.int64)
    first = tf.fill([batch_size], tf.cast(sampling_seed, tf.int64) * 1000003 + step)
    return tf.stack([first, key], axis=-1)


def uniform(seeds, num, salt):
    """float32 ``[B, num]`` in [0, 1): one stateless stream per image (``seeds [B, 2]``)."""
    salted = seeds + tf.constant([[salt * 7919, 0]], tf.int64)
    return tf.map_fn(
        lambda s: tf.random.stateless_uniform([num], seed=s),
        salted,
        fn_output_signature=tf.TensorSpec([None], tf.float32),
    )


def select_random(candidates, num, keys, max_num):
    """Pick ``min(num, count)`` random candidates per row.

    Args:
      candidates: bool ``[B, N]``.
      num: int32 ``[B]`` wanted per row.
      keys: float32 ``[B, N]`` uniform in [0, 1) (the randomness).
      max_num: python int, an upper bound on ``num`` (size of the partial sort).

    Returns:
      bool ``[B, N]``, a subset of ``candidates``.
    """
    values = tf.where(candidates, keys, -1.0)
    k = tf.minimum(max_num, tf.shape(values)[1])
    top = tf.math.top_k(values, k=k, sorted=True).values  # [B, k]
    num = tf.cast(num, tf.int32)
    kth = tf.gather(top, tf.clip_by_value(num - 1, 0, k - 1), batch_dims=1)  # [B]
    # Keys are distinct with probability 1, so ">= kth" keeps exactly min(num, count) entries.
    return tf.logical_and(tf.logical_and(candidates, values >= kth[:, None]), (num > 0)[:, None])


def count(mask):
    """int32 ``[B]``: number of True entries per row of ``mask [B, N]``."""
    return tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
