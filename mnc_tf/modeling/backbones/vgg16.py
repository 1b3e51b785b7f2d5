"""VGG-16 to conv5_3 (stride 16, 512 channels), the paper's backbone, and its ImageNet weights.

ImageNet weights come from ``keras.applications``' VGG-16 file *with* the classifier layers
(``vgg16_weights_tf_dim_ordering_tf_kernels.h5``, 528 MB): its conv layers initialise the
backbone and its ``fc1`` / ``fc2`` (7·7·512 → 4096 → 4096) initialise the class stage's fc6/fc7
in both pathways, as the released MNC model starts from ``VGG16.mask.caffemodel``.
``backbone_weights="imagenet"`` downloads and caches that file with ``keras.utils.get_file``
(the same name, URL and hash as ``keras.applications.VGG16(weights="imagenet")``, so the
two share ``~/.keras/models``); a local path may be that file or the ``notop`` one (then the
fc layers start random), or a Keras 3 ``.weights.h5`` of ``VGG16(include_top=False)``
(loaded by Keras, conv layers only).
"""

import logging

import h5py
import keras
import numpy as np

log = logging.getLogger(__name__)

VGG16_WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
VGG16_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + VGG16_WEIGHTS_FILE
)
VGG16_WEIGHTS_HASH = "64373286793e3c8b2b4e3219cbf3544b"
FC_LAYERS = ("fc1", "fc2")


def download_vgg16_weights():
    """Path of the cached ImageNet VGG-16 file (downloaded on first use).

    Raises:
      OSError: the download failed; the message names the URL and what to do instead.
    """
    try:
        return keras.utils.get_file(
            VGG16_WEIGHTS_FILE,
            VGG16_WEIGHTS_URL,
            cache_subdir="models",
            file_hash=VGG16_WEIGHTS_HASH,
        )
    except Exception as err:  # network, HTTP, hash mismatch, disk: one clear message
        raise OSError(
            f"backbone_weights='imagenet': could not download the VGG-16 ImageNet weights "
            f"from {VGG16_WEIGHTS_URL} ({type(err).__name__}: {err}). Download that file "
            "(or the _notop one) yourself and pass its local path as backbone_weights."
        ) from err


def read_h5_layer_weights(path, names):
    """Weights of the layers ``names`` in a legacy Keras ``.h5`` file, by layer name.

    The ``keras.applications`` format (also ``save_weights`` of Keras 2): a group per layer
    with a ``weight_names`` attribute, at the root or under ``model_weights``. Layers absent
    from the file are absent from the result.

    Returns:
      dict name → list of numpy arrays (kernel, bias).
    """
    out = {}
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"backbone_weights {path!r} is not a readable .h5 file: {err}") from err
    with f:
        group = f["model_weights"] if "model_weights" in f else f
        for name in names:
            if name not in group or not isinstance(group[name], h5py.Group):
                continue
            g = group[name]
            weight_names = [
                n.decode("utf8") if isinstance(n, bytes) else str(n)
                for n in g.attrs.get("weight_names", [])
            ]
            if weight_names:
                out[name] = [np.asarray(g[n]) for n in weight_names]
    return out


def build_vgg16(weights=None, freeze_early_layers=True):
    """``keras.applications.VGG16`` cut at ``block5_conv3`` (the last pool is dropped).

    Args:
      weights: None, ``"imagenet"`` (downloaded and cached, see the module docstring) or a
        local Keras ``.h5`` / ``.weights.h5`` file of VGG-16 (with or without the fc layers).
      freeze_early_layers: freeze conv1–conv2 (``block1_*``, ``block2_*``) as in the paper.

    Returns:
      ``(model, fc)``: ``keras.Model`` caffe-normalised BGR images ``[B, H, W, 3]`` →
      ``[B, ceil(H/16), ceil(W/16), 512]`` (exactly ``H/16`` for multiples of 16), and
      ``fc``: ``{"fc1": (kernel, bias), "fc2": (kernel, bias)}`` from the weights file, or
      None (no weights, or a file without the fc layers).
    """
    keras3_file = isinstance(weights, str) and weights.endswith(".weights.h5")
    base = keras.applications.VGG16(
        include_top=False, weights=weights if keras3_file else None, input_shape=(None, None, 3)
    )
    model = keras.Model(base.input, base.get_layer("block5_conv3").output, name="vgg16")
    fc = None
    if keras3_file:
        log.warning(
            "backbone_weights %r is a Keras 3 .weights.h5 (conv layers only): the class "
            "stage's fc6/fc7 start from random weights; keras.applications' legacy .h5 "
            "file (or 'imagenet') also initialises them",
            weights,
        )
    elif weights is not None:
        path = download_vgg16_weights() if weights == "imagenet" else weights
        convs = [layer.name for layer in model.layers if layer.weights]
        stored = read_h5_layer_weights(path, convs + list(FC_LAYERS))
        missing = [name for name in convs if name not in stored]
        if missing:
            raise ValueError(
                f"backbone_weights {path!r} is not a VGG-16 weights file: "
                f"layers {missing} are missing"
            )
        for name in convs:
            layer = model.get_layer(name)
            want = [tuple(w.shape) for w in layer.weights]
            got = [tuple(w.shape) for w in stored[name]]
            if want != got:
                raise ValueError(
                    f"backbone_weights {path!r}: layer {name} has weights of shapes {got}, "
                    f"VGG-16 needs {want}"
                )
            layer.set_weights(stored[name])
        if all(name in stored for name in FC_LAYERS):
            fc = {name: tuple(stored[name]) for name in FC_LAYERS}
        else:
            log.warning(
                "backbone_weights %r has no fc1/fc2 (a notop file): the class stage's "
                "fc6/fc7 start from random weights, unlike the released MNC model",
                path,
            )
    if freeze_early_layers:
        for layer in model.layers:
            if layer.name.startswith(("block1_", "block2_")):
                layer.trainable = False
    return model, fc
