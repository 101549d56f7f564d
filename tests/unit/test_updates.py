"""Which config updates Serve applies in place. A declarative deploy (``serve deploy``, a RayService) versions an
application by a hash of its import path, runtime env and ``args``: any change under ``args`` (the catalogue's
batching values included) replaces every replica, while the ``deployments:`` overrides (``user_config``,
autoscaling) keep the version and reconfigure or rescale the running replicas. `make chaos` relies on both."""

from __future__ import annotations

import copy

from ray.serve._private.deploy_utils import get_app_code_version
from ray.serve.schema import ServeDeploySchema

from loadtests import chaos


def _version(config: dict) -> str:
    return get_app_code_version(ServeDeploySchema.model_validate(config).applications[0])


def test_overrides_keep_the_version_and_a_release_bump_changes_it():
    config = chaos.chaos_config(8100)
    (_, scaled), (_, batching), (_, release) = chaos.updates(config)
    assert _version(scaled) == _version(batching) == _version(config)  # applied in place
    assert _version(release) != _version(config)  # every replica replaced, one at a time
    overrides = {d["name"]: d for d in batching["applications"][0]["deployments"]}
    assert overrides["embedder"]["user_config"]["max_batch_size"] == 16


def test_an_autoscaling_override_introduced_later_replaces_every_replica():
    config = chaos.chaos_config(8100)
    without = copy.deepcopy(config)
    del without["applications"][0]["deployments"]
    assert _version(without) != _version(config)  # hence chaos_config declares its overrides from the start


def test_batching_values_under_args_replace_every_replica():
    config = chaos.chaos_config(8100)
    changed = copy.deepcopy(config)
    changed["applications"][0]["args"]["models"][0]["batching"]["max_batch_size"] = 16
    assert _version(changed) != _version(config)
