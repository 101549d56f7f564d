"""A config update changes only what it must: new batching values reach the replicas as user_config alone, so Serve
applies them in place (``reconfigure``) instead of replacing the ingress, the job runner and the models' replicas."""

from __future__ import annotations

from ray.serve._private.build_app import build_app as build_serve_app

from services.app import build_app
from services.config import RaydioAppArgs


def _deployments(args: dict) -> dict:
    return {d.name: d for d in build_serve_app(build_app(args), name="raydio").deployments}


def test_new_batching_values_change_user_config_only():
    models = [model.model_dump(mode="json") for model in RaydioAppArgs().models]
    changed = [{**model, "batching": {"max_batch_size": 3, "batch_wait_timeout_s": 0.02}} if "batching" in model else model
               for model in models]
    before, after = _deployments({"models": models}), _deployments({"models": changed})
    assert before.keys() == after.keys()
    for name, deployment in before.items():
        # init arguments decide whether Serve replaces a replica; they must not carry the batching values
        assert deployment.init_kwargs == after[name].init_kwargs, name
        assert deployment.ray_actor_options == after[name].ray_actor_options, name
    batched = [m["name"] for m in models if "batching" in m]
    assert batched  # the default catalogue has batched models to check
    for name in batched:
        assert after[name].user_config == {"max_batch_size": 3, "batch_wait_timeout_s": 0.02}
        assert before[name].user_config != after[name].user_config
