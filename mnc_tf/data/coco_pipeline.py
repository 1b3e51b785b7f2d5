"""COCO-format instance segmentation → ``tf.data`` pipeline (docs/CONTRACTS.md elements).

Modules: :mod:`~mnc_tf.data.annotations` (JSON, cleaning, RLE),
:mod:`~mnc_tf.data.image_io` (reading and checking image bytes),
:mod:`~mnc_tf.data.coco_source` (parsed records and the per-element loader),
:mod:`~mnc_tf.data.decode_ledger` (counting JPEGs TensorFlow rejects), and this one: the
pipeline and its public entry points :func:`coco_dataset` / :func:`coco_dataset_fn`.

How an element is made, and where the time goes:

1. **Once, up front (Python):** the JSON is read with pycocotools; every image and annotation
   is checked without rasterising anything (file exists, category known, bbox sane, polygons
   with ≥ 3 points, crowd regions set aside). Problems are counted in ``dataset.info`` and
   logged. This is a few seconds for COCO train2017.
2. **Per element, in ``tf.numpy_function`` (parallel map, ``AUTOTUNE``):** the file is read
   and its JPEG frame header checked by a small marker scanner (anything it does not
   recognise goes to PIL: missing, garbage, truncated files are counted in
   ``info.skipped``). On a record's first load its polygons become compressed RLE with
   pycocotools and empty masks are found from their areas; the result is kept on the record,
   so later epochs only read and check the file (~0.04 ms of GIL time at 600 px). A complete
   RGB/grayscale JPEG of the annotated size leaves Python as its bytes; anything else (CMYK,
   RGBA, PNG, 16-bit, palette, a JPEG without its end marker) is decoded here with
   OpenCV/PIL and converted to 8-bit RGB. Only small arrays cross back into TensorFlow.
3. **Per element, in TF ops (no GIL):** ``tf.io.decode_jpeg`` (TF's defaults, as in the
   exported serving signature); without a cache, the image and boxes are flipped here,
   at original resolution, when the element's flip decision says so. A JPEG whose data is
   corrupt past a valid header can still fail in ``decode_jpeg``: ``ignore_errors`` drops
   that element and a ledger of element positions counts it as ``corrupt_image`` (logged
   with the file) — the epoch goes on. Pass ``verify_images=True`` to decode every image
   once up front with OpenCV instead, so the counts are final before training starts.
4. **Per element, in TF ops:** resize (bilinear), optional scale jitter, and (after a
   cache) the flip of the image and boxes (stateless random ops seeded per element, so a
   ``seed`` makes the stream reproducible). Each element's flip decision is drawn once
   (``_draw``) and carried in it as ``flip``; the masks are still RLE strings.
5. **Per batch:** ``padded_batch`` (images uint8, strings padded with ``""``), then the
   ``MncRasterizeMasks`` custom op decodes, flips, resizes (bit-identical to
   ``tf.image.resize`` + ``>= 0.5``) and pads every mask straight into the
   ``[B, N, Hp, Wp]`` batch tensor, with no per-element mask tensors in between;
   prefetch.

Every element has the same static shape (``pad_to``, ``max_instances``), so Keras never
retraces its train function. Images are uint8 and **not** normalised: the model does that
for its backbone (see :mod:`mnc_tf.data.preprocess`).

Performance notes (``benchmarks/bench_input.py``):

- the dense ``[B, N, Hp, Wp]`` masks of the contract dominate the cost for large ``N``
  (37 MB per image at N = 100, 608×608). Pick ``max_instances`` to fit the data (COCO has
  ≤ 93 instances per image, most far fewer); the smallest instances beyond it are dropped
  and counted;
- such big short-lived tensors make TF's default CPU allocator page-fault on every batch, so
  ``import mnc_tf`` turns on TF's pooling BFC allocator (``TF_CPU_ALLOCATOR_USE_BFC=true``
  unless already set; it must happen before TensorFlow's first op): 1.9x at N = 8, 6x at
  N = 100 on 600-px images;
- masks are rasterised per batch by the ``MncRasterizeMasks`` op (C++, masks in
  parallel; before it, per-element rasterisation, a float32 resize and ``padded_batch``'s
  zero-fill and copy moved each mask byte three times). The op library is required
  (docs/DESIGN.md), as for the RoI warp; JPEGs are decoded by ``tf.io.decode_jpeg``;
  the Python part of an element holds the GIL, so it is kept to reading the file and
  scanning its header;
- images stay uint8 to the end: the model casts and normalises them on its device, so the
  CPU assembles (and a GPU receives) a quarter of the bytes of float32 images
  (``image_dtype=tf.float32`` casts the finished batch for other consumers);
- RLE annotations are validated once, when parsing (``invalid_rle``), so the mask op
  never meets a malformed string;
- the dataset's length is unknown to ``tf.data`` (corrupt images are filtered lazily), so
  Keras warns "Your input ran out of data" once at the end of the first epoch; that is
  harmless. ``repeat=True`` with ``steps_per_epoch`` avoids it.
"""

from __future__ import annotations

import functools
import os

import tensorflow as tf

from mnc_tf.data import preprocess
from mnc_tf.data.coco_source import CocoSource
from mnc_tf.data.decode_ledger import DecodeLedger, end_of_pass_sentinel
from mnc_tf.ops import rasterize_masks


def build_pipeline(
    source,
    batch_size=1,
    training=False,
    short_side=600,
    max_side=1000,
    pad_to=None,
    flip=None,
    scale_jitter=None,
    shuffle=None,
    cache=False,
    repeat=False,
    seed=None,
    drop_remainder=None,
    input_context=None,
    num_parallel_calls=tf.data.AUTOTUNE,
    image_dtype=tf.uint8,
):
    """One pipeline over ``source`` (a :class:`CocoSource`); arguments as
    :func:`coco_dataset`."""
    batch_size = _positive_int(batch_size, "batch_size")
    image_dtype = _image_dtype(image_dtype)
    if short_side <= 0 or max_side <= 0:
        raise ValueError(f"short_side and max_side must be > 0, got {short_side} and {max_side}")
    if scale_jitter is not None:
        if len(scale_jitter) != 2 or not 0 < scale_jitter[0] <= scale_jitter[1]:
            raise ValueError(
                f"scale_jitter must be (low, high) with 0 < low <= high, got {scale_jitter}"
            )
        scale_jitter = (float(scale_jitter[0]), float(scale_jitter[1]))
    if pad_to is None:
        pad_to = source.default_pad_to(short_side, max_side, scale_jitter)
    else:
        if len(pad_to) != 2:
            raise ValueError(f"pad_to must be (height, width), got {pad_to}")
        pad_to = (_positive_int(pad_to[0], "pad_to"), _positive_int(pad_to[1], "pad_to"))
    flip = training if flip is None else bool(flip)
    shuffle = training if shuffle is None else bool(shuffle)
    drop_remainder = training if drop_remainder is None else bool(drop_remainder)
    source.info.image_size = pad_to
    if not source.records:
        raise ValueError(f"no usable image in the dataset ({source.info.report()})")

    pipeline_id = 0
    ds = tf.data.Dataset.range(len(source.records))
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        pipeline_id = input_context.input_pipeline_id
        ds = ds.shard(input_context.num_input_pipelines, pipeline_id)
    # Different pipelines of one seeded run must not draw identical augmentations.
    seed = None if seed is None else int(seed) + 1_000_003 * pipeline_id
    if shuffle and not cache:
        # Shuffling indices is free; shuffling decoded images would need a big buffer.
        ds = ds.shuffle(len(source.records), seed=seed, reshuffle_each_iteration=True)
    # One random int64 per element, fresh each epoch, reproducible for a seed; every
    # augmentation derives stateless seeds from it (parallel map stays deterministic).
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    # Each element's flip decision is drawn once (_draw) and carried in it. Without a cache
    # it is drawn before loading and the loader flips the original image and boxes (the
    # flip op on uint8 pixels, before they are resized); a cache holds unflipped examples,
    # drawn for and flipped after it, by augment_example.
    flip_at_load = flip and not cache
    # JPEGs are decoded by tf.io.decode_jpeg after the Python loader has checked their
    # header; one whose data is corrupt past the header can still fail there. Such an
    # element is dropped by ignore_errors and counted by the ledger (see decode_ledger).
    # The ledger's map is sequential on purpose: it must see positions in order.
    ledger = DecodeLedger(source.info)
    if flip_at_load:
        ds = tf.data.Dataset.zip((ds, randoms))
    ds = ds.concatenate(end_of_pass_sentinel(ds.element_spec)).enumerate()

    def load(position, element):
        if flip_at_load:
            index, random = element
            drawn = _draw(random, flip)
            return source.load_tf(index, drawn["flip"], position, ledger) | drawn
        return source.load_tf(element, None, position, ledger)

    ds = ds.map(load, num_parallel_calls=num_parallel_calls)
    ds = ds.ignore_errors()
    ds = ds.map(ledger.arrived_tf)
    ds = ds.filter(_is_ok)
    if cache:
        ds = ds.cache("" if cache is True else os.fspath(cache))
        if shuffle:
            ds = ds.shuffle(min(len(source.records), 256), seed=seed)
    if repeat:
        ds = ds.repeat()
    if not flip_at_load:
        ds = tf.data.Dataset.zip((ds, randoms))

    hp, wp, n = pad_to[0], pad_to[1], source.max_instances

    def prepare(example, random=None):
        if random is not None:  # (a cached or unflipped pipeline: drawn here)
            example = example | _draw(random, flip)
        image, info, boxes, labels, _ = preprocess.augment_example(
            example["image"],
            example["boxes"],
            example["labels"],
            None,  # masks: rasterised per batch, flipped by example["flip"]
            short_side=short_side,
            max_side=max_side,
            max_size=pad_to,
            flip=None if flip_at_load or not flip else example["flip"],
            scale_jitter=scale_jitter,
            seed=example["random"],
        )
        features = {"images": image, "image_info": info, "image_id": example["image_id"]}
        targets = {
            "boxes": boxes,
            "labels": labels,
            "rles": example["rles"],
            "mask_flip": example["flip"],
        }
        return features, targets

    ds = ds.map(prepare, num_parallel_calls=num_parallel_calls)
    # Padding happens while batching: padded_batch writes each padded batch once. The
    # loader already cut instances to max_instances, and the resize cap keeps every
    # image within pad_to, so the fixed shapes always fit. Masks travel as RLE strings
    # ("" pads) and are rasterised into the finished batch (_finish_batch).
    target_shapes = {"boxes": [n, 4], "labels": [n], "rles": [n], "mask_flip": []}
    target_padding = {"boxes": -1.0, "labels": -1, "rles": "", "mask_flip": False}
    ds = ds.padded_batch(
        batch_size,
        padded_shapes=(
            {"images": [hp, wp, 3], "image_info": [4, 2], "image_id": []},
            target_shapes,
        ),
        padding_values=(
            {
                "images": tf.constant(0, tf.uint8),
                "image_info": 0.0,
                "image_id": tf.constant(0, tf.int64),
            },
            target_padding,
        ),
        drop_remainder=drop_remainder,
    )
    ds = ds.map(
        functools.partial(_finish_batch, padded_size=(hp, wp), image_dtype=image_dtype),
        num_parallel_calls=num_parallel_calls,
    )
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    # Sharded by hand above when an InputContext is given; otherwise shard by element
    # (the source is a range, so the default FILE policy would only warn and fall back).
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF
        if input_context is not None
        else tf.data.experimental.AutoShardPolicy.DATA
    )
    ds = ds.with_options(options)
    ds.info = source.info
    return ds


def _finish_batch(features, targets, padded_size, image_dtype):
    """Batch-level work: images cast to ``image_dtype`` if that is not uint8, and the masks
    rasterised from their RLE strings straight into ``[B, N, Hp, Wp]``."""
    if image_dtype != tf.uint8:
        features = {**features, "images": tf.cast(features["images"], image_dtype)}
    targets = dict(targets)
    sizes = tf.cast(tf.round(features["image_info"][:, :2]), tf.int32)
    targets["masks"] = rasterize_masks(
        targets.pop("rles"), sizes[:, 0], sizes[:, 1], targets.pop("mask_flip"), padded_size
    )
    return features, targets


def _image_dtype(dtype):
    try:
        dtype = tf.as_dtype(dtype)
    except TypeError:
        dtype = None
    if dtype not in (tf.uint8, tf.float16, tf.bfloat16, tf.float32):
        raise ValueError(f"image_dtype must be uint8, float16, bfloat16 or float32, got {dtype}")
    return dtype


def _is_ok(example):
    return example["ok"]


def _draw(random, flip):
    """An element's random draws, made once and carried in it: ``random`` (the int64 seed
    of its stateless augmentations) and ``flip`` (its horizontal-flip decision)."""
    decision = preprocess.flip_coin(random) if flip else tf.constant(False)
    return {"random": random, "flip": decision}


def _positive_int(value, name):
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------


def coco_dataset(
    annotation_file,
    image_dir,
    batch_size=1,
    training=False,
    short_side=600,
    max_side=1000,
    pad_to=None,
    max_instances=100,
    flip=None,
    scale_jitter=None,
    shuffle=None,
    drop_empty=None,
    cache=False,
    repeat=False,
    seed=None,
    image_ids=None,
    drop_remainder=None,
    input_context=None,
    verify_images=False,
    num_parallel_calls=tf.data.AUTOTUNE,
    image_dtype=tf.uint8,
):
    """A batched ``tf.data.Dataset`` of ``(features, targets)`` from a COCO instances JSON.

    Element (docs/CONTRACTS.md), ``B = batch_size``, ``(Hp, Wp) = pad_to``,
    ``N = max_instances``::

      features = {"images": uint8 [B, Hp, Wp, 3] RGB (not normalised; see image_dtype),
                  "image_info": float32 [B, 4, 2], "image_id": int64 [B]}
      targets  = {"boxes": float32 [B, N, 4] yxyx resized pixels, -1 padding,
                  "labels": int32 [B, N] 1..C, -1 padding,
                  "masks": uint8 [B, N, Hp, Wp], 0 padding}

    The returned dataset carries ``dataset.info`` (:class:`mnc_tf.data.DatasetInfo`):
    classes, ``category_ids[label - 1]``, padded size and skip counts. (Further
    ``tf.data`` transformations return new objects without ``.info``.)

    Args:
      annotation_file: COCO instances JSON path (or a parsed dict / ``COCO``).
      image_dir: folder that ``images[*].file_name`` is relative to.
      batch_size: images per batch (the global batch when ``input_context`` is given).
      training: default for ``flip``, ``shuffle``, ``drop_empty``, ``drop_remainder``.
      short_side, max_side: resize targets (paper: 600 / 1000).
      pad_to: ``(Hp, Wp)``; default: the smallest multiple of 32 holding every resized
        image of this dataset (at most ``max_side`` rounded up). Images that would not fit
        are scaled down further (``image_info`` records the actual scale).
      max_instances: ``N``; extra instances (the smallest) are dropped and counted.
      flip: random horizontal flip; scale_jitter: ``(low, high)`` factor on both sides.
      shuffle: reshuffle every epoch; drop_empty: drop images without usable instances.
      cache: ``True`` caches decoded original-size examples in memory (small datasets
        only: COCO train would need ~100 GB), a path caches to files.
      repeat: repeat forever (for ``steps_per_epoch`` training).
      seed: makes shuffling and augmentation reproducible (each epoch still differs).
      image_ids: restrict to these image ids (in this order unless shuffled).
      drop_remainder: drop a last partial batch (default: ``training``; keeps the batch
        dimension static so the train function never retraces).
      input_context: a ``tf.distribute.InputContext``: shard by ``input_pipeline_id`` and
        use the per-replica batch size (see :func:`coco_dataset_fn`).
      verify_images: decode every image once up front so corrupt files are counted before
        the first epoch (slow on big datasets); otherwise they are found lazily.
      num_parallel_calls: parallelism of the decode and prepare maps.
      image_dtype: dtype of ``features["images"]``. uint8 (default) is what the model
        wants: it casts and normalises on its device, and a uint8 batch is a quarter of
        the bytes to assemble on the CPU and to copy to a GPU. ``tf.float32`` (values
        0..255) for consumers that need floats.
    """
    return coco_dataset_fn(
        annotation_file,
        image_dir,
        batch_size,
        training=training,
        short_side=short_side,
        max_side=max_side,
        pad_to=pad_to,
        max_instances=max_instances,
        flip=flip,
        scale_jitter=scale_jitter,
        shuffle=shuffle,
        drop_empty=drop_empty,
        cache=cache,
        repeat=repeat,
        seed=seed,
        image_ids=image_ids,
        drop_remainder=drop_remainder,
        verify_images=verify_images,
        num_parallel_calls=num_parallel_calls,
        image_dtype=image_dtype,
    )(input_context)


def coco_dataset_fn(annotation_file, image_dir, global_batch_size, **kwargs):
    """``dataset_fn(input_context)`` for ``strategy.distribute_datasets_from_function``.

    The annotations are parsed once, here; each input pipeline then gets its shard
    (``input_pipeline_id`` of ``num_input_pipelines``) batched with the per-replica batch
    size ``input_context.get_per_replica_batch_size(global_batch_size)``.

    Usage::

      fn = coco_dataset_fn(ann, images, global_batch_size=8, training=True, seed=0)
      dist = strategy.distribute_datasets_from_function(fn)
      fn.info.num_classes

    ``kwargs`` are :func:`coco_dataset`'s. With ``strategy.experimental_distribute_dataset``
    pass a plain :func:`coco_dataset` with the global batch size instead (it is sharded by
    element across workers).
    """
    training = kwargs.get("training", False)
    drop_empty = kwargs.pop("drop_empty", None)
    source = CocoSource(
        annotation_file,
        image_dir,
        drop_empty=training if drop_empty is None else drop_empty,
        image_ids=kwargs.pop("image_ids", None),
        max_instances=kwargs.pop("max_instances", 100),
        verify_images=kwargs.pop("verify_images", False),
    )

    def dataset_fn(input_context=None):
        return source.dataset(batch_size=global_batch_size, input_context=input_context, **kwargs)

    dataset_fn.info = source.info
    return dataset_fn
