"""The datasets of a training run: where the annotations and images come from, and the pipelines.

:func:`build_datasets` turns the experiment config's ``data:`` section into the training
dataset (repeating, shuffled, split per replica by
``strategy.distribute_datasets_from_function``) and the held-out one, both from
:func:`mnc_tf.data.coco_dataset_fn` / :func:`mnc_tf.data.coco_dataset` at the model's input
size. The sources (``data.format``): the synthetic shapes (generated once per split by
:func:`ensure_shapes_dataset`), a COCO instances JSON with its image folder, or SBD / VOC
instance annotations converted to COCO once and cached in the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import uuid

from mnc_tf.training import strategy as strategy_lib
from mnc_tf.training.config import ExperimentConfig

logger = logging.getLogger("mnc_tf.training")


@dataclasses.dataclass
class DataSplits:
    """The datasets of a run.

    ``train`` is what ``fit`` consumes (a ``tf.data.Dataset`` or a distributed dataset,
    repeating forever); ``val`` a plain, finite, batched ``tf.data.Dataset`` (or None);
    ``info``/``val_info`` their :class:`mnc_tf.data.DatasetInfo`.
    """

    train: object
    info: object
    val: object = None
    val_info: object = None
    val_annotations: object = None


def _spec_matches(spec_file, ann, spec):
    """Whether a complete split with these generation parameters is already in place."""
    if not (os.path.isfile(spec_file) and os.path.isfile(ann)):
        return False
    try:
        with open(spec_file) as f:
            return json.load(f) == spec
    except (OSError, ValueError):
        return False


def ensure_shapes_dataset(shapes_cfg, split: str, num_images: int) -> tuple[str, str]:
    """Generate (once) one split of the synthetic shapes dataset; returns ``(json, image_dir)``.

    The split is regenerated only when its parameters change (recorded in ``spec.json``).
    Generation writes into a temporary directory renamed into place, so concurrent workers
    and interrupted runs never see a half-written split.
    """
    from mnc_tf.data import make_shapes_dataset

    root = os.path.abspath(shapes_cfg.dir)
    target = os.path.join(root, split)
    spec = {
        "num_images": int(num_images),
        "seed": int(shapes_cfg.seed),
        "image_size": shapes_cfg.image_size,
        "num_classes": int(shapes_cfg.num_classes),
        "options": dict(shapes_cfg.options),
    }
    spec_file = os.path.join(target, "spec.json")
    ann = os.path.join(target, "annotations.json")
    images = os.path.join(target, "images")
    if _spec_matches(spec_file, ann, spec):
        return ann, images
    tmp_root = os.path.join(root, f".tmp-{uuid.uuid4().hex}")
    try:
        logger.info("generating %d synthetic shapes images (%s) in %s", num_images, split, target)
        make_shapes_dataset(
            tmp_root,
            num_images,
            seed=shapes_cfg.seed,
            image_size=shapes_cfg.image_size,
            num_classes=shapes_cfg.num_classes,
            split=split,
            **shapes_cfg.options,
        )
        with open(os.path.join(tmp_root, split, "spec.json"), "w") as f:
            json.dump(spec, f)
        if _spec_matches(spec_file, ann, spec):
            # Another worker finished the same split first: keep its copy (replacing it
            # would pull the directory from under that worker's loader).
            return ann, images
        if os.path.isdir(target):
            trash = f"{target}.old-{uuid.uuid4().hex}"
            os.rename(target, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(os.path.join(tmp_root, split), target)
        except OSError:
            if not os.path.isfile(ann):  # not "another worker got there first"
                raise
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return ann, images


def _sources(data_cfg, model_dir):
    """``(train_annotation, train_image_dir, val_annotation, val_image_dir)``.

    Annotations are a COCO JSON path or an already-converted COCO dict (SBD / VOC).
    """
    fmt = data_cfg.format
    if fmt == "shapes":
        s = data_cfg.shapes
        train = ensure_shapes_dataset(s, "train", s.num_train_images)
        val = ensure_shapes_dataset(s, "val", s.num_val_images) if s.num_val_images else None
        return (*train, *(val or (None, None)))
    if fmt == "coco":
        if not data_cfg.train_annotations or not data_cfg.train_images:
            raise ValueError(
                "data.format 'coco' needs data.train_annotations (instances JSON) and "
                "data.train_images (image folder)."
            )
        for key in ("train_annotations", "train_images", "val_annotations", "val_images"):
            path = getattr(data_cfg, key)
            if path and not os.path.exists(path):
                raise ValueError(f"data.{key}: {path} does not exist.")
        return (
            data_cfg.train_annotations,
            data_cfg.train_images,
            data_cfg.val_annotations,
            data_cfg.val_images,
        )
    # sbd / voc: convert the instance PNG/.mat annotations to COCO once, cached in model_dir.
    from mnc_tf.data import cached_sbd_to_coco

    if not data_cfg.root or not os.path.isdir(data_cfg.root):
        raise ValueError(
            f"data.format {fmt!r} needs data.root (a directory), got {data_cfg.root!r}."
        )
    out = []
    for split in (data_cfg.train_split, data_cfg.val_split):
        if not split:
            out.extend((None, None))
            continue
        cache = os.path.join(model_dir, f"{fmt}_{split}_annotations.json")
        coco, image_dir, skipped = cached_sbd_to_coco(data_cfg.root, split, fmt, cache)
        if skipped:
            logger.warning("%s %s: skipped while converting: %s", fmt, split, skipped)
        out.extend((coco, image_dir))
    return tuple(out)


def build_datasets(config: ExperimentConfig, strategy, model_dir: str) -> DataSplits:
    """Training (distributed, repeating) and held-out datasets for ``config``."""
    from mnc_tf.data import coco_dataset, coco_dataset_fn

    data_cfg = config.data
    mnc_cfg = config.mnc_config()
    train_ann, train_dir, val_ann, val_dir = _sources(data_cfg, model_dir)
    global_batch = strategy_lib.global_batch_size(data_cfg.per_replica_batch_size, strategy)
    common = dict(
        short_side=mnc_cfg.input.short_side,
        max_side=mnc_cfg.input.max_side,
        max_instances=mnc_cfg.input.max_instances,
        **data_cfg.loader_options,
    )
    train_kwargs = dict(
        training=True,
        flip=data_cfg.flip,
        cache=data_cfg.cache,
        repeat=True,
        seed=config.train.seed,
        **common,
    )
    from mnc_tf.training.resumable_input import without_external_state_check

    fn = coco_dataset_fn(train_ann, train_dir, global_batch, **train_kwargs)
    info = fn.info

    def dataset_fn(input_context=None):
        # Checkpoints hold the iterator's position (exact resume).
        return without_external_state_check(fn(input_context))

    if strategy.num_replicas_in_sync > 1 or strategy_lib.tf_config() is not None:
        train = strategy.distribute_datasets_from_function(dataset_fn)
    else:
        train = dataset_fn(None)
    val = val_info = None
    if val_ann is not None:
        image_ids = None
        if data_cfg.max_val_images:
            from mnc_tf.data import load_coco

            coco, _ = load_coco(val_ann)
            image_ids = sorted(coco.getImgIds())[: data_cfg.max_val_images]
        val = coco_dataset(
            val_ann,
            val_dir,
            batch_size=global_batch,
            training=False,
            image_ids=image_ids,
            **common,
        )
        val_info = val.info
        if list(val_info.category_ids) != list(info.category_ids):
            raise ValueError(
                "the validation split's categories differ from the training split's: "
                f"{val_info.category_ids} vs {info.category_ids}."
            )
    return DataSplits(train=train, info=info, val=val, val_info=val_info, val_annotations=val_ann)
