"""The serving graphs of an MNC model: decode → resize → the model → original-image pixels.

:func:`build_serving_functions` returns the ``tf.function`` s behind the SavedModel's
signatures (``serving_default``, ``serving_image_tensor``, ``serving_tf_example``) and its
``infer`` function; their inputs, outputs and input checks are documented in
:mod:`mnc_tf.export.serving`, which traces and writes them. Stock TensorFlow ops only (the
format sniffing reads the image headers with string and integer ops).
"""

import tensorflow as tf

SIGNATURE_ENCODED = "serving_default"
SIGNATURE_IMAGE_TENSOR = "serving_image_tensor"
SIGNATURE_TF_EXAMPLE = "serving_tf_example"
SIGNATURES = (SIGNATURE_ENCODED, SIGNATURE_IMAGE_TENSOR, SIGNATURE_TF_EXAMPLE)
# A tf.function saved beside the signatures (not one of them): the model on resized images.
INFER_FUNCTION = "infer"

OUTPUT_KEYS = (
    "detection_boxes",
    "detection_scores",
    "detection_classes",
    "detection_masks",
    "num_detections",
    "image_info",
)
TF_EXAMPLE_IMAGE_KEY = "image/encoded"

# Leading bytes of the formats tf.io.decode_image understands (TF 2.21: JPEG, PNG, GIF, BMP,
# WebP, JPEG XL); checked up front so that junk input fails with a message naming the input
# instead of a decoder-internal error.
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_GIF_MAGIC = b"GIF8"
_BMP_MAGIC = b"BM"
_RIFF_MAGIC, _WEBP_MAGIC = b"RIFF", b"WEBP"  # bytes 0–3 and 8–11
_JXL_CODESTREAM_MAGIC = b"\xff\x0a"
_JXL_CONTAINER_MAGIC = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
_FORMATS = "JPEG, PNG, GIF, BMP, WebP or JPEG XL"
_FORMAT_NAMES = ["unknown", "JPEG", "PNG", "GIF", "BMP", "WebP", "JPEG XL"]
_HEADER_BYTES = 32


def label_map(model):
    """The model's label → (category id, class name) mapping.

    Args:
      model: an object with optional ``class_names`` (sequence, ``class_names[label - 1]``)
        and ``category_ids`` (sequence of ints, ``category_ids[label - 1]``, may be ``None``)
        and a ``num_classes`` used when both are missing (an MNC model has all three).

    Returns:
      ``(category_ids, class_names)``: two lists of length ``num_classes``, index
      ``label - 1``. Without ``category_ids`` the contiguous labels ``1..num_classes`` are
      used; without ``class_names`` the names are ``"class_<label>"``.
    """
    names = getattr(model, "class_names", None)
    ids = getattr(model, "category_ids", None)
    num_classes = getattr(model, "num_classes", None)
    if names is not None:
        num_classes = len(names)
    elif ids is not None:
        num_classes = len(ids)
    if num_classes is None:
        raise ValueError(
            "model: cannot tell the number of classes; expected `class_names`, `category_ids` "
            "or `num_classes` on the model"
        )
    names = [str(n) for n in names] if names is not None else None
    ids = [int(i) for i in ids] if ids is not None else list(range(1, num_classes + 1))
    if names is None:
        names = [f"class_{label}" for label in range(1, num_classes + 1)]
    if len(ids) != len(names):
        raise ValueError(
            f"model: len(category_ids) = {len(ids)} does not match len(class_names) = {len(names)}"
        )
    return ids, names


def model_settings(model):
    """The pre- and post-processing an export bakes in or records: the resize of
    ``model.preprocessing`` and the mask size and thresholds of ``model.config``.

    Returns:
      dict ``short_side``, ``max_side`` (the resize, ints), ``mask_size``, ``mask_threshold``
      (``config.postprocess.mask_threshold``: binarisation of the pasted soft masks) and
      ``score_threshold`` (``config.postprocess.predict_score_threshold``: detections to draw
      / write by default) — the values ``assets/export_info.json`` records.

    Raises:
      ValueError: the model lacks one of them (not an MNC model).
    """
    try:
        preprocessing, config = model.preprocessing, model.config
        return {
            "short_side": int(preprocessing.short_side),
            "max_side": int(preprocessing.max_side),
            "mask_size": config.heads.mask_size,
            "mask_threshold": config.postprocess.mask_threshold,
            "score_threshold": config.postprocess.predict_score_threshold,
        }
    except AttributeError as e:
        raise ValueError(
            f"model: expected `{e.name}` on an MNC model (model.preprocessing, "
            f"model.config.heads / .postprocess); got {type(model).__name__}"
        ) from None


def _first_true(flags):
    """Index of the first True in a bool ``[B]`` (``B`` when there is none)."""
    flags = tf.concat([flags, [True]], axis=0)
    return tf.cast(tf.argmax(tf.cast(flags, tf.int32)), tf.int32)


def _run_each(values, fn, fill):
    """``fn(value)`` for every element of ``values`` [B]; elements where it fails are dropped.

    Runs ``fn`` in a ``tf.data`` pipeline with ``ignore_errors`` (stock ops; the only way a
    graph can survive a decoder / parser error and still say *which* element failed).

    Returns:
      ``(ok, outputs)``: bool ``[B]`` (``fn`` succeeded on that element) and ``fn``'s outputs
      batched and zero-padded to the largest element, one row per *successful* element, in
      order. ``fill``: outputs of the same structure used only to keep the pipeline non-empty.
    """
    count = tf.shape(values)[0]
    index = tf.range(count)
    dataset = tf.data.Dataset.from_tensor_slices((index, values))
    dataset = dataset.map(lambda i, value: (i, fn(value))).ignore_errors()
    # A sentinel row (index -1): get_single_element needs at least one element.
    dataset = dataset.concatenate(tf.data.Dataset.from_tensors((tf.constant(-1), fill)))
    done, outputs = dataset.padded_batch(tf.cast(count, tf.int64) + 1).get_single_element()
    keep = tf.shape(done)[0] - 1
    ok = tf.reduce_any(tf.equal(done[:keep, None], index[None, :]), axis=0)
    return ok, tf.nest.map_structure(lambda t: t[:keep], outputs)


def _be(head, start, size):
    """Big-endian unsigned int of ``size`` bytes at ``start`` of uint8 ``head`` [B, n]."""
    value = tf.zeros(tf.shape(head)[:1], tf.int64)
    for k in range(size):
        value = value * 256 + tf.cast(head[:, start + k], tf.int64)
    return value


def _le(head, start, size, signed=False):
    """Little-endian int of ``size`` bytes at ``start`` of uint8 ``head`` [B, n]."""
    value = tf.zeros(tf.shape(head)[:1], tf.int64)
    for k in reversed(range(size)):
        value = value * 256 + tf.cast(head[:, start + k], tf.int64)
    if signed:
        value = tf.where(value >= 2 ** (8 * size - 1), value - 2 ** (8 * size), value)
    return value


def _sniff(encoded):
    """Format and, where the header says it, the size of every encoded image of ``encoded`` [B].

    Returns:
      ``(format, header, height, width)``: int32 ``[B]`` index into ``_FORMAT_NAMES``
      (0 = not an image format ``tf.io.decode_image`` reads); uint8 ``[B, 8]`` first bytes
      (zero-padded); int64 ``[B]`` height and width from PNG / GIF / BMP headers, -1 where the
      header was not read.
    """
    # The first bytes only (substr stops at the end of a shorter string), zero-padded.
    head = tf.strings.substr(encoded, 0, _HEADER_BYTES)
    padded = tf.strings.join([head, tf.fill(tf.shape(encoded), b"\x00" * _HEADER_BYTES)])
    head = tf.io.decode_raw(tf.strings.substr(padded, 0, _HEADER_BYTES), tf.uint8)

    def starts_with(magic, offset=0):
        expected = tf.constant(list(magic), tf.uint8)
        return tf.reduce_all(tf.equal(head[:, offset : offset + len(magic)], expected), axis=1)

    is_format = [
        starts_with(b"\xff\xd8\xff"),  # JPEG
        starts_with(_PNG_MAGIC),
        starts_with(_GIF_MAGIC),
        starts_with(_BMP_MAGIC),
        tf.logical_and(starts_with(_RIFF_MAGIC), starts_with(_WEBP_MAGIC, 8)),
        tf.logical_or(starts_with(_JXL_CODESTREAM_MAGIC), starts_with(_JXL_CONTAINER_MAGIC)),
    ]
    fmt = tf.zeros(tf.shape(encoded), tf.int32)
    for code in reversed(range(len(is_format))):
        fmt = tf.where(is_format[code], code + 1, fmt)
    unknown = tf.fill(tf.shape(encoded), tf.constant(-1, tf.int64))
    # PNG: IHDR width, height (big-endian) at 16, 20. GIF: logical screen at 6, 8. BMP: the
    # DIB header (size at 14) holds int32 width, height at 18, 22 (height < 0: top-down), or
    # int16 in the old 12-byte BITMAPCOREHEADER.
    core = tf.equal(_le(head, 14, 4), 12)
    bmp_h = tf.abs(tf.where(core, _le(head, 20, 2), _le(head, 22, 4, signed=True)))
    bmp_w = tf.abs(tf.where(core, _le(head, 18, 2), _le(head, 18, 4, signed=True)))
    height = tf.where(is_format[1], _be(head, 20, 4), unknown)
    width = tf.where(is_format[1], _be(head, 16, 4), unknown)
    height = tf.where(is_format[2], _le(head, 8, 2), height)
    width = tf.where(is_format[2], _le(head, 6, 2), width)
    height = tf.where(is_format[3], bmp_h, height)
    width = tf.where(is_format[3], bmp_w, width)
    return fmt, head[:, :8], height, width


def build_serving_functions(model):
    """The three serving ``tf.function`` s of ``model`` (not yet traced), plus ``infer``.

    Trace them (``get_concrete_function()``) inside
    ``mnc_tf.ops.roi_warp_implementation(...)`` to choose the RoI warping implementation;
    :func:`mnc_tf.export.serving.export_serving` uses ``"reference"`` (stock ops).

    Args:
      model: an MNC model (``keras.Model``): called as
        ``model({"images": float32 [B, H, W, 3], "image_info": float32 [B, 4, 2]},
        training=False)`` and returning the dict of CONTRACTS.md; ``model.config`` gives
        ``short_side`` / ``max_side``; ``class_names`` / ``category_ids`` the labels.

    Returns:
      dict name → ``tf.function`` with a fixed input signature: the three signatures (see
      :mod:`mnc_tf.export.serving` for inputs and outputs) and ``"infer"``, the model itself on
      already-resized images (``images`` float32 ``[B, H, W, 3]``, ``image_info`` float32
      ``[B, 4, 2]`` → the CONTRACTS.md outputs; not a serving signature).
    """
    # Imported here: mnc_tf.data is only needed once a model is exported.
    from mnc_tf.data.preprocess import resize_image

    settings = model_settings(model)
    short_side, max_side = settings["short_side"], settings["max_side"]
    category_ids, _ = label_map(model)
    # Row = contiguous label (0 = background / padding) → dataset category id (0 on padding).
    label_to_category = tf.constant([0] + category_ids, tf.int32)
    format_names = tf.constant(_FORMAT_NAMES)

    def resize(image):
        return resize_image(image, short_side, max_side)

    def check_batch(values, name):
        return tf.debugging.Assert(
            tf.shape(values)[0] > 0, [f"{name}: empty batch; expected at least one element"]
        )

    def assert_each(bad, name, message, *details):
        """Assert no element is ``bad``; the message names the first bad element's index."""
        first = _first_true(bad)
        at = tf.minimum(first, tf.shape(bad)[0] - 1)
        data = [f"{name}: element", first, message]
        for detail in details:
            data.append(detail(at) if callable(detail) else detail)
        return tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), data, summarize=8)

    def decode_batch(encoded, name):
        """Encoded images [B] → resized float32 [B, h, w, 3] zero-padded, image_info [B, 4, 2]."""
        with tf.control_dependencies([check_batch(encoded, name)]):
            encoded = tf.identity(encoded)
        fmt, head, height, width = _sniff(encoded)
        length = tf.strings.length(encoded)
        checks = [
            assert_each(
                tf.equal(length, 0), name, "is an empty string (or missing); expected image bytes"
            ),
            assert_each(
                tf.logical_and(tf.equal(fmt, 0), length > 0),
                name,
                f"is not an encoded {_FORMATS} image; its first bytes (decimal) are",
                lambda i: head[i],
            ),
            assert_each(
                tf.logical_or(tf.equal(height, 0), tf.equal(width, 0)),
                name,
                "is a zero-size",
                lambda i: format_names[fmt[i]],
                "image; expected a positive height and width, the header says (h, w) =",
                lambda i: tf.stack([height[i], width[i]]),
            ),
        ]
        with tf.control_dependencies(checks):
            encoded = tf.identity(encoded)

        def decode(value):
            image = tf.io.decode_image(value, channels=3, expand_animations=False)
            shape = tf.shape(image)
            with tf.control_dependencies(
                [tf.debugging.Assert(tf.logical_and(shape[0] > 0, shape[1] > 0), [shape])]
            ):
                return resize(image)

        fill = (tf.zeros([1, 1, 3], tf.float32), tf.zeros([4, 2], tf.float32))
        ok, (images, info) = _run_each(encoded, decode, fill)
        with tf.control_dependencies(
            [
                assert_each(
                    tf.logical_not(ok),
                    name,
                    "could not be decoded as a",
                    lambda i: format_names[fmt[i]],
                    "image (truncated or corrupt data, or a zero-size image)",
                )
            ]
        ):
            return tf.identity(images), tf.identity(info)

    def infer(images, image_info):
        return model({"images": images, "image_info": image_info}, training=False)

    def postprocess(images, image_info):
        outputs = infer(images, image_info)
        scale = image_info[:, 2, :]  # (sy, sx) = resized / original
        original = image_info[:, 0, :]  # (h, w) of the original image
        yxyx_scale = tf.tile(scale, [1, 2])[:, None, :]
        yxyx_max = tf.tile(original, [1, 2])[:, None, :]
        boxes = tf.cast(outputs["boxes"], tf.float32) / yxyx_scale
        # The model clips to the resized image; clip again to absorb division rounding.
        boxes = tf.clip_by_value(boxes, 0.0, yxyx_max)
        classes = tf.gather(label_to_category, tf.cast(outputs["classes"], tf.int32))
        return {
            "detection_boxes": boxes,
            "detection_scores": tf.cast(outputs["scores"], tf.float32),
            "detection_classes": classes,
            "detection_masks": tf.cast(outputs["masks"], tf.float32),
            "num_detections": tf.cast(outputs["num_detections"], tf.int32),
            "image_info": image_info,
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_encoded(images):
        return postprocess(*decode_batch(images, f"{SIGNATURE_ENCODED} input images"))

    # Channels are not fixed in the signature: the Session loader does not check a fed
    # tensor's shape against it (a [1, 16, 16, 4] feed of a "[-1, -1, -1, 3]" signature failed
    # deep inside map_fn), and the graph must see the real channel count to reject it.
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, name="images")])
    def serve_image_tensor(images):
        name = f"{SIGNATURE_IMAGE_TENSOR} input images"
        shape = tf.shape(images)
        with tf.control_dependencies([check_batch(images, name)]):
            shape = tf.identity(shape)
        checks = [
            tf.debugging.Assert(
                tf.equal(shape[3], 3),
                [
                    f"{name}: element 0 (like every element) has",
                    shape[3],
                    "channels; expected uint8 RGB images [B, H, W, 3], got shape",
                    shape,
                ],
                summarize=4,
            ),
            tf.debugging.Assert(
                tf.reduce_all(shape[1:3] > 0),
                [
                    f"{name}: element 0 (like every element) is a zero-size image; expected "
                    "H, W > 0 in [B, H, W, 3], got shape",
                    shape,
                ],
                summarize=4,
            ),
        ]
        with tf.control_dependencies(checks):
            images = tf.ensure_shape(images, [None, None, None, 3])
        # Every image has the same size, so every resized image does too: map_fn can stack.
        resized, info = tf.map_fn(
            resize,
            images,
            fn_output_signature=(
                tf.TensorSpec([None, None, 3], tf.float32),
                tf.TensorSpec([4, 2], tf.float32),
            ),
        )
        return postprocess(resized, info)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_example(examples):
        name = f"{SIGNATURE_TF_EXAMPLE} input examples"
        with tf.control_dependencies([check_batch(examples, name)]):
            examples = tf.identity(examples)
        # A missing feature parses as "" and is reported by decode_batch's empty-string check.
        features = {TF_EXAMPLE_IMAGE_KEY: tf.io.FixedLenFeature([], tf.string, default_value="")}

        def parse(serialized):
            return tf.io.parse_single_example(serialized, features)[TF_EXAMPLE_IMAGE_KEY]

        ok, encoded = _run_each(examples, parse, tf.constant(""))
        not_parsed = assert_each(
            tf.logical_not(ok),
            name,
            "is not a serialized tf.train.Example (the bytes do not parse as one)",
        )
        with tf.control_dependencies([not_parsed]):
            encoded = tf.identity(encoded)
        return postprocess(*decode_batch(encoded, f"{name}, feature {TF_EXAMPLE_IMAGE_KEY}"))

    @tf.function(
        input_signature=[
            {
                "images": tf.TensorSpec([None, None, None, 3], tf.float32, name="images"),
                "image_info": tf.TensorSpec([None, 4, 2], tf.float32, name="image_info"),
            }
        ]
    )
    def infer_resized(features):
        return infer(features["images"], features["image_info"])

    return {
        SIGNATURE_ENCODED: serve_encoded,
        SIGNATURE_IMAGE_TENSOR: serve_image_tensor,
        SIGNATURE_TF_EXAMPLE: serve_tf_example,
        INFER_FUNCTION: infer_resized,
    }
