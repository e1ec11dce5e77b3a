"""The ``quayside.gc|retention|immutability|quotas|inventory`` keys of the origin config."""

from __future__ import annotations

import pytest

from regcore.config import ConfigError, load_origin_config
from regcore.opsconfig import glob_regex, parse_age


def load(quayside: dict, environ: dict | None = None):
    return load_origin_config(None, environ or {}, {"quayside": quayside}).ops


def test_defaults_and_a_full_section():
    assert load({}).gc.grace == 3600.0 and not load({}).gc.enabled
    ops = load(
        {
            "gc": {"enabled": True, "interval": "12h", "grace": "30m", "delete_untagged": True},
            "retention": {
                "enabled": True,
                "policies": [
                    {
                        "repositories": "team/**",
                        "keep_last": 5,
                        "keep_tags": "^v",
                        "tags_older_than": "90d",
                    },
                    {"repositories": "*", "untagged_older_than": "2w"},
                ],
            },
            "immutability": {"rules": [{"repositories": "release/**"}], "refuse_latest": "prod/**"},
            "quotas": {"namespaces": {"team": "10GiB", "*": "1TB"}},
        }
    )
    assert (ops.gc.interval, ops.gc.grace, ops.gc.delete_untagged) == (43200.0, 1800.0, True)
    assert ops.retention.policy_for("team/a/b").keep_last == 5
    assert ops.retention.policy_for("solo").untagged_older_than == 14 * 86400
    assert ops.retention.policy_for("team/a/b").tags_older_than == 90 * 86400
    assert ops.immutability.refuse_latest == ("prod/**",)
    assert ops.quotas.limit_for("team") == ("team", 10 * 1024**3)
    assert ops.quotas.limit_for("other") == ("*", 10**12)


def test_environment_overrides_use_the_usual_names():
    ops = load({}, {"QUAYSIDE_GC_GRACE": "5m", "REGISTRY_QUAYSIDE_GC_ENABLED": "true"})
    assert ops.gc.grace == 300.0 and ops.gc.enabled


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"gc": {"grac": "1h"}}, "quayside.gc.grac"),
        (
            {"retention": {"policies": [{"repositories": "a", "keep_lst": 1}]}},
            "quayside.retention.policies[0].keep_lst",
        ),
        (
            {"retention": {"policies": [{"keep_last": 1}]}},
            "quayside.retention.policies[0].repositories",
        ),
        (
            {"retention": {"policies": [{"repositories": "a", "keep_tags": "("}]}},
            "quayside.retention.policies[0].keep_tags",
        ),
        (
            {"immutability": {"rules": [{"repositories": "a", "tags": "[z-a]"}]}},
            "quayside.immutability.rules[0].tags",
        ),
        ({"quotas": {"namespaces": {"team": "lots"}}}, "quayside.quotas.namespaces.team"),
        ({"gc": {"interval": "0s"}}, "quayside.gc.interval"),
    ],
)
def test_bad_keys_and_values_name_the_key(section, key):
    with pytest.raises(ConfigError) as exc:
        load(section)
    assert key in str(exc.value)


def test_globs_and_ages():
    assert glob_regex("team/*").fullmatch("team/app")
    assert not glob_regex("team/*").fullmatch("team/app/api")
    assert glob_regex("team/**").fullmatch("team/app/api")
    assert not glob_regex("team/a?p").fullmatch("team/a/p")
    assert parse_age("7d") == 7 * 86400 and parse_age("1h30m") == 5400 and parse_age(60) == 60
