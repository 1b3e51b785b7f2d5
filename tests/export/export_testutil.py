"""Helpers shared by the export tests: the tiny MNC they export and synthetic pictures."""

import io

import numpy as np

# Category ids deliberately not 1..N, so a test notices when contiguous labels leak out.
CLASS_NAMES = ["circle", "square", "triangle"]
CATEGORY_IDS = [5, 9, 13]
SHORT_SIDE, MAX_SIDE = 64, 112


def make_tiny_model():
    """An untrained MNC with the tiny backbone on 64–112 px images (seeded weights)."""
    import keras

    from mnc_tf.config import MNCConfig
    from mnc_tf.modeling.mnc import MNC

    keras.utils.set_random_seed(0)
    config = MNCConfig.tiny_shapes(short_side=SHORT_SIDE, max_side=MAX_SIDE, max_detections=20)
    model = MNC(
        num_classes=len(CLASS_NAMES),
        backbone="tiny",
        config=config,
        class_names=CLASS_NAMES,
        category_ids=CATEGORY_IDS,
    )
    model(np.zeros((1, SHORT_SIDE, SHORT_SIDE, 3), np.float32), training=False)  # build
    return model


def scene(height, width, seed=0):
    """A uint8 RGB picture of a few bright shapes on a textured background."""
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 90, size=(height, width, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:height, :width]
    for _ in range(3):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        r = rng.uniform(0.1, 0.25) * min(height, width)
        color = rng.integers(150, 255, size=3)
        if rng.uniform() < 0.5:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        else:
            inside = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
        image[inside] = color
    return image


def encode_jpeg(image, quality=95):
    """uint8 ``[H, W, 3]`` → JPEG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_png(array, mode=None):
    """uint8 array → PNG bytes (``mode`` as in ``PIL.Image.fromarray``)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def tf_example(encoded):
    """A serialized ``tf.train.Example`` with the image bytes under ``image/encoded``."""
    import tensorflow as tf

    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
    return tf.train.Example(
        features=tf.train.Features(feature={"image/encoded": feature})
    ).SerializeToString()
