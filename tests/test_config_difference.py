"""Which config changes make a run folder refuse to resume (runner.config_difference)."""

from __future__ import annotations

import pytest

from metalearn.run.run_folder import config_difference

SAVED = """
name: a
seeds: [0]
episodes: {ks: [1, 5], repetitions: 3}
tracking: {project: p}
"""
DEFAULTS = """
name: experiment
seeds: [0]
episodes: {ks: [1], repetitions: 3, queries: 5}
tracking: {project: metalearn}
"""


def test_equal_configs_and_non_science_keys_agree() -> None:
    assert config_difference(SAVED, SAVED) is None
    renamed = SAVED.replace("name: a", "name: b").replace("project: p", "project: q")
    assert config_difference(SAVED, renamed, DEFAULTS) is None


def test_a_changed_value_is_named_with_both_values() -> None:
    changed = SAVED.replace("repetitions: 3", "repetitions: 4")
    assert config_difference(SAVED, changed) == ("first difference: config key 'episodes.repetitions': 3 in its "
                                                 "config.yaml, 4 now")
    assert "'seeds': [0] in its config.yaml, [0, 1] now" in config_difference(SAVED, SAVED.replace("[0]", "[0, 1]"))


@pytest.mark.parametrize(("value", "refused"), [(5, False), (7, True)])
def test_a_field_added_since_is_accepted_only_at_its_default(value: int, refused: bool) -> None:
    added = SAVED.replace("repetitions: 3}", f"repetitions: 3, queries: {value}}}")
    difference = config_difference(SAVED, added, DEFAULTS)
    assert (difference is not None) == refused
    if refused:
        assert "'episodes.queries': (absent) in its config.yaml, 7 now" in difference
    assert config_difference(SAVED, added) is not None  # without defaults every added key counts


def test_a_removed_field_is_refused() -> None:
    removed = SAVED.replace(", repetitions: 3", "")
    assert "'episodes.repetitions': 3 in its config.yaml, (absent) now" in config_difference(SAVED, removed, DEFAULTS)
