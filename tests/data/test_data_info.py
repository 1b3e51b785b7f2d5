"""The one label <-> category id mapping (mnc_tf.data.info): labels 1..C, category_ids[l - 1]."""

import numpy as np
import pytest

from mnc_tf.data.info import DatasetInfo, category_of_labels, label_of_category


def test_mapping_both_ways_with_non_contiguous_ids():
    ids = [5, 2, 90]
    assert label_of_category(ids) == {5: 1, 2: 2, 90: 3}
    labels = np.array([3, 1, 1, 2])
    np.testing.assert_array_equal(category_of_labels(labels, ids), [90, 5, 5, 2])
    assert category_of_labels(np.zeros(0, np.int64), ids).shape == (0,)
    info = DatasetInfo(class_names=["a", "b", "c"], category_ids=ids)
    for label, category_id in enumerate(ids, start=1):
        assert info.label_to_category_id(label) == category_id
        assert info.category_id_to_label(category_id) == label


def test_unknown_labels_and_ids_are_named():
    info = DatasetInfo(class_names=["a", "b"], category_ids=[5, 2])
    with pytest.raises(ValueError, match="label must be in 1..2"):
        info.label_to_category_id(3)
    with pytest.raises(ValueError, match="category_id 7 is not one of"):
        info.category_id_to_label(7)
