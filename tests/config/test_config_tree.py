"""The config tree: sections, the one loader's key checks, flat aliases, moved YAML keys."""

import dataclasses
import subprocess

import pytest
import yaml

from mnc_tf.config import (
    LEGACY_KEYS,
    ExperimentConfig,
    MNCConfig,
    ModelConfig,
    RPNConfig,
    check_crop_pool_sizes,
    load_config,
)
from mnc_tf.config.base import ConfigNode

SECTIONS = (
    "input",
    "backbone_options",
    "rpn",
    "roi_sampling",
    "heads",
    "cascade",
    "loss_weights",
    "postprocess",
    "optimizer",
)


def test_every_section_is_a_typed_node():
    c = MNCConfig()
    for name in SECTIONS:
        assert isinstance(getattr(c, name), ConfigNode), name
    leaves = sum(len(dataclasses.fields(getattr(c, s))) for s in SECTIONS) + 2
    # Every leaf of the tree has exactly one pre-tree flat name, and no two share one.
    assert len(LEGACY_KEYS) == leaves - 2  # deterministic_sampling / sampling_seed stay top level
    assert len(set(LEGACY_KEYS.values())) == len(LEGACY_KEYS)
    for old, path in LEGACY_KEYS.items():
        section, leaf = path.split(".")
        assert leaf in {f.name for f in dataclasses.fields(getattr(c, section))}, old


def test_flat_aliases_set_the_same_leaf_as_the_path():
    for old, path in LEGACY_KEYS.items():
        section, leaf = path.split(".")
        value = getattr(getattr(MNCConfig(), section), leaf)
        if isinstance(value, bool):
            new = not value
        elif isinstance(value, (int, float)) and value is not None:
            continue  # numeric ranges are covered by the value checks below
        else:
            continue
        a = MNCConfig().replace(**{old: new})
        b = MNCConfig().replace(**{path: new})
        assert a == b and getattr(getattr(a, section), leaf) is new, old


def test_section_mapping_merges_into_current_values():
    c = MNCConfig.tiny_shapes().replace(rpn={"nms_iou": 0.6})
    assert c.rpn.nms_iou == 0.6
    assert c.rpn.conv_filters == 128  # the preset's value is kept, not reset to the default
    assert c.replace(rpn=RPNConfig()).rpn.conv_filters == 512  # a node replaces the section


def test_round_trips():
    c = MNCConfig.tiny_shapes(mask_size=21, backbone_weights="w.h5")
    assert MNCConfig.from_dict(c.to_dict()) == c
    assert MNCConfig.from_yaml(c.to_yaml()) == c
    assert yaml.safe_load(c.to_yaml())["rpn"]["anchor_scales"] == [2.0, 4.0, 8.0]
    assert c.heads.mask_size == 21 and c.backbone_options.weights == "w.h5"


def test_old_flat_dict_still_loads():
    """What a model saved before the tree holds in its config (keras get_config)."""
    flat = {"short_side": 300, "max_side": 500, "rpn_nms_iou": 0.6, "optimizer": "adam"}
    c = MNCConfig.from_dict(flat)
    assert (c.input.short_side, c.input.max_side) == (300, 500)
    assert c.rpn.nms_iou == 0.6 and c.optimizer.name == "adam"


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"rpn": {"nms_iuo": 0.5}}, r"'rpn.nms_iuo'.*'rpn.nms_iou'"),
        ({"rpn": {"nms_iou": 1.5}}, r"rpn.nms_iou must be in \(0, 1\]"),
        ({"heads": {"roi_pooled_size": 5}}, r"heads.roi_pooled_size must be a divisor"),
        ({"input": {"short_side": 600, "max_side": 500}}, r"input.max_side"),
        ({"optimizer": {"name": "rmsprop"}}, r"optimizer.name must be one of"),
        ({"rpn": 3}, r"section 'rpn' must be a mapping"),
        ({"rpn": {"conv_filters": "many"}}, r"rpn.conv_filters: expected an integer"),
    ],
)
def test_bad_keys_and_values_name_the_path(data, fragment):
    with pytest.raises(ValueError, match=fragment):
        MNCConfig.from_dict(data)


def test_crop_pool_check_is_the_one_rule():
    check_crop_pool_sizes(28, 14, 7)
    for args, fragment in [
        ((28, 5, None), "roi_pooled_size"),
        ((28, 14, 5), "class_pool_size"),
        ((0, 14, None), "roi_crop_size"),
        ((34, 2, None), r"must be <= 16"),  # the op's window limit, caught at config time
    ]:
        with pytest.raises(ValueError, match=fragment):
            check_crop_pool_sizes(*args)


def test_experiment_yaml_uses_the_tree(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(
        "model:\n  backbone: tiny\n  rpn:\n    nms_iou: 0.6\n  optimizer:\n    name: adam\n"
    )
    config = load_config(
        str(path), ["model.optimizer.total_steps=7", "model.rpn.anchor_scales=2,4"]
    )
    assert isinstance(config.model, ModelConfig)
    assert config.model.rpn.nms_iou == 0.6 and config.model.rpn.anchor_scales == (2, 4)
    assert config.model.optimizer.total_steps == 7 and config.model.optimizer.name == "adam"
    mnc = config.mnc_config()
    assert type(mnc) is MNCConfig and mnc.rpn == config.model.rpn


def test_flat_yaml_keys_say_where_they_went(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("model:\n  total_steps: 100\n")
    with pytest.raises(
        ValueError, match=r"'model.total_steps' is now 'model.optimizer.total_steps'"
    ):
        load_config(str(path))
    with pytest.raises(ValueError, match=r"'rpn_nms_iou' is now 'model.rpn.nms_iou'"):
        load_config(None, ["model.rpn_nms_iou=0.5"])
    with pytest.raises(ValueError, match=r"'model.rpn.nms_iuo'.*'model.rpn.nms_iou'"):
        load_config(None, ["model.rpn.nms_iuo=0.5"])


@pytest.mark.parametrize("name", ["shapes_tiny_mnc5", "voc2012_vgg16_mnc5", "coco_resnet101_mnc5"])
def test_shipped_configs_mean_what_they_meant_before_the_tree(name):
    """Each shipped config, read through the tree, equals its last flat version (git history)."""
    try:
        old = subprocess.run(
            ["git", "show", f"2dac6ec:configs/{name}.yaml"], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.skip("git is not installed")
    if old.returncode != 0:
        pytest.skip("not a git checkout with the pre-tree history")
    flat = yaml.safe_load(old.stdout)["model"]
    constructor = {k: flat.pop(k) for k in ("backbone", "num_stages") if k in flat}
    config = load_config(f"configs/{name}.yaml")
    assert config.mnc_config() == MNCConfig.from_dict(flat)
    assert (config.model.backbone, config.model.num_stages) == (
        constructor["backbone"],
        constructor["num_stages"],
    )


def test_experiment_to_dict_round_trip():
    config = load_config("configs/shapes_tiny_mnc5.yaml")
    assert ExperimentConfig.from_dict(config.to_dict()) == config
