"""mnc_tf.io_utils: a write is complete under its name or absent; leftovers are recognisable."""

import json
import os

import pytest

from mnc_tf.io_utils import atomic_path, atomic_write_json, atomic_write_text


def test_atomic_write_text_and_json_replace_the_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("old")
    atomic_write_text(path, "a: 1\n")
    assert path.read_text() == "a: 1\n"
    atomic_write_json(tmp_path / "h.json", {"loss": [1.5, 2]}, indent=1)
    assert json.loads((tmp_path / "h.json").read_text()) == {"loss": [1.5, 2]}
    assert sorted(os.listdir(tmp_path)) == ["config.yaml", "h.json"]  # no temporaries left


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "run_info.json"
    path.write_text("previous")
    with pytest.raises(TypeError):
        atomic_write_json(path, {"x": object()})  # not JSON-serialisable, fails mid-write
    assert path.read_text() == "previous"
    assert os.listdir(tmp_path) == ["run_info.json"]


def test_the_temporary_is_named_after_the_target_and_replaces_a_directory(tmp_path):
    target = tmp_path / "1"
    target.mkdir()
    (target / "stale").write_text("x")
    staging = tmp_path / ".staging"
    staging.mkdir()
    with atomic_path(target, temp_dir=staging, temp_prefix="model-") as tmp:
        assert os.path.dirname(tmp) == str(staging)
        assert os.path.basename(tmp).startswith("model-")
        os.makedirs(os.path.join(tmp, "variables"))
    assert os.listdir(target) == ["variables"]  # the old directory is gone
    assert os.listdir(staging) == []
    with atomic_path(tmp_path / "final.keras", suffix=".keras") as tmp:
        name = os.path.basename(tmp)
        assert name.startswith("final.keras.tmp-") and name.endswith(".keras")
        # A killed process leaves exactly this name: the pattern a resumed run removes.
        from mnc_tf.training.checkpoints import remove_interrupted_writes

        open(tmp, "w").close()
        assert remove_interrupted_writes(str(tmp_path)) == [tmp]
        open(tmp, "w").close()
    assert (tmp_path / "final.keras").exists()
