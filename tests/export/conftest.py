"""Fixtures for the export tests: one tiny MNC and one SavedModel export per session."""

import pytest
from export_testutil import make_tiny_model


@pytest.fixture(scope="session")
def tiny_model():
    return make_tiny_model()


@pytest.fixture(scope="session")
def export_base(tiny_model, tmp_path_factory):
    """``<base>/1`` holds the tiny model's SavedModel; returns ``<base>``."""
    from mnc_tf.export import export_serving

    base = tmp_path_factory.mktemp("export")
    export_serving(tiny_model, base, version=1)
    return base


@pytest.fixture(scope="session")
def loaded_export(export_base):
    import tensorflow as tf

    return tf.saved_model.load(str(export_base / "1"))
