"""Train MNC on COCO (or any COCO-format dataset of your own) and report mask / box AP.

    python examples/train_coco.py --coco-dir /data/coco \
        --model-dir runs/coco

``--coco-dir`` holds ``annotations/instances_{train,val}2017.json`` and the ``train2017/`` and
``val2017/`` image folders; for your own data pass ``--set data.train_annotations=...``
etc. instead. Trains with ``configs/coco_resnet101_mnc5.yaml`` on all local GPUs
(``MirroredStrategy``) or a cluster (``TF_CONFIG``), then scores the final model on the whole
validation set with pycocotools: segm and bbox AP next to the paper's ResNet-101 numbers
(test-dev mask AP 24.6 @[.5:.95], 44.3 @0.5).
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco-dir", help="COCO 2017 root (annotations/, train2017/, val2017/)")
    parser.add_argument(
        "--backbone-weights", help="local ResNet101 notop .h5 (default: the config's imagenet)"
    )
    parser.add_argument("--model-dir", default="runs/coco_resnet101_mnc5")
    parser.add_argument(
        "--config",
        default=os.path.join(os.path.dirname(HERE), "configs", "coco_resnet101_mnc5.yaml"),
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from mnc_tf import console

    console.quiet_tensorflow()  # no TensorFlow start-up banner (before importing it)
    from mnc_tf.training.config import load_config
    from mnc_tf.training.train import train

    overrides = []
    if args.coco_dir:
        ann = os.path.join(args.coco_dir, "annotations")
        overrides += [
            f"data.train_annotations={os.path.join(ann, 'instances_train2017.json')}",
            f"data.train_images={os.path.join(args.coco_dir, 'train2017')}",
            f"data.val_annotations={os.path.join(ann, 'instances_val2017.json')}",
            f"data.val_images={os.path.join(args.coco_dir, 'val2017')}",
        ]
    if args.backbone_weights:
        overrides.append(f"model.backbone_options.weights={args.backbone_weights}")
    config = load_config(args.config, overrides + args.overrides)
    train(config, args.model_dir)

    import keras

    from mnc_tf.data import coco_dataset
    from mnc_tf.evaluation import COCOEvaluator, evaluate_model

    mnc = config.mnc_config()
    val = coco_dataset(
        config.data.val_annotations,
        config.data.val_images,
        batch_size=1,
        training=False,
        short_side=mnc.input.short_side,
        max_side=mnc.input.max_side,
        max_instances=mnc.input.max_instances,
    )
    model = keras.models.load_model(os.path.join(args.model_dir, "final.keras"))
    evaluator = COCOEvaluator(config.data.val_annotations, category_ids=val.info.category_ids)
    metrics = evaluate_model(model, val, [evaluator])
    print(f"\n{val.info.num_images} validation images")
    print(
        f"  segm AP {metrics['segm/AP']:.3f}  AP50 {metrics['segm/AP50']:.3f}   "
        "(paper, ResNet-101, test-dev: 0.246 / 0.443)"
    )
    print(f"  bbox AP {metrics['bbox/AP']:.3f}  AP50 {metrics['bbox/AP50']:.3f}")
    return metrics


if __name__ == "__main__":
    main()
