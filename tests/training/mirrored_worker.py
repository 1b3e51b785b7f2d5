"""Child process of test_train_distribute: one device vs MirroredStrategy on 2 logical CPUs.

Usage: ``python mirrored_worker.py ANNOTATIONS IMAGE_DIR OUT.json``. The CPU must be split
before TensorFlow initialises, hence a separate process. Both models start from the same
weights and take 2 optimizer steps on the same global batch of 2 images (the mirrored one
splits it 1 + 1 over /cpu:0 and /cpu:1); the losses and weights are written to OUT.json.
"""

import json
import sys

from mnc_tf.training.strategy import select_strategy, split_cpu

split_cpu(2)  # before any TF op

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from training_testutil import TINY_MODEL  # noqa: E402

from mnc_tf.data import coco_dataset  # noqa: E402
from mnc_tf.modeling.mnc import MNC  # noqa: E402

STEPS = 2


def build(strategy, num_classes, weights=None):
    cfg = dict(TINY_MODEL)
    backbone, stages = cfg.pop("backbone"), cfg.pop("num_stages")
    with strategy.scope():
        model = MNC(num_classes, backbone=backbone, num_stages=stages, config=cfg)
        if weights is not None:
            model.set_weights(weights)
        model.compile()
    return model


def main(annotations, image_dir, out):
    keras.utils.set_random_seed(0)
    ds = coco_dataset(
        annotations,
        image_dir,
        batch_size=2,
        training=False,
        short_side=64,
        max_side=64,
        max_instances=4,
    )
    num_classes = ds.info.num_classes
    batch = next(iter(ds))
    data = tf.data.Dataset.from_tensors(batch).repeat()

    one = build(tf.distribute.get_strategy(), num_classes)
    initial = one.get_weights()
    mirrored_strategy = select_strategy("mirrored")
    assert mirrored_strategy.num_replicas_in_sync == 2, mirrored_strategy.extended.worker_devices
    two = build(mirrored_strategy, num_classes, initial)

    h1 = one.fit(data, epochs=1, steps_per_epoch=STEPS, verbose=0)
    h2 = two.fit(data, epochs=1, steps_per_epoch=STEPS, verbose=0)
    w1, w2 = one.get_weights(), two.get_weights()

    # Mirrored copies of each variable must agree across the two devices.
    replica_gap, mirrored = 0.0, 0
    for v in two.trainable_variables:
        copies = getattr(v.value, "values", ())
        copies = [np.asarray(x) for x in copies]
        mirrored += len(copies) == 2
        for x in copies[1:]:
            replica_gap = max(replica_gap, float(np.max(np.abs(x - copies[0]))))
    result = {
        "devices": list(mirrored_strategy.extended.worker_devices),
        "loss_one": {k: float(v[-1]) for k, v in h1.history.items()},
        "loss_two": {k: float(v[-1]) for k, v in h2.history.items()},
        "max_weight_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(w1, w2, strict=True)),
        "max_update": max(float(np.max(np.abs(a - b))) for a, b in zip(w1, initial, strict=True)),
        "max_weight": max(float(np.max(np.abs(a))) for a in w1),
        "replica_gap": replica_gap,
        "mirrored_variables": mirrored,
        "num_variables": len(w1),
        "steps": [int(one.optimizer.iterations.numpy()), int(two.optimizer.iterations.numpy())],
    }
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
