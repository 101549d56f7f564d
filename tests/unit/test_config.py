"""Configuration: the shipped files load; deliberately bad files fail with messages that say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.config import ConfigError, RaydioAppArgs, Settings, load_serve_config

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "configs"


@pytest.mark.parametrize("name", ["local.yaml", "test.yaml"])
def test_shipped_serve_configs_are_valid(name):
    config = load_serve_config(ROOT / "configs" / "serve" / name)
    args = RaydioAppArgs.model_validate(config["applications"][0]["args"])
    assert [m.name for m in args.models] == ["embedder", "digits", "chat"]  # the names existing clients use
    embedder = args.models[0]
    assert embedder.batching.max_batch_size > 1
    assert args.ingress.max_ongoing_requests >= embedder.batching.max_batch_size
    assert config["http_options"]["host"] == "127.0.0.1"


def test_minimal_config_takes_documented_defaults():
    config = load_serve_config(FIXTURES / "minimal.yaml")
    assert RaydioAppArgs.model_validate(config["applications"][0].get("args") or {}) == RaydioAppArgs()


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("unknown_key.yaml", "models[0] (name: embedder).deployment.num_cpu: unknown key"),
        ("wrong_type.yaml", "models[0] (name: chat).deployment.max_ongoing_requests: Input should be a valid integer"),
        ("bad_autoscaling.yaml", "models[0] (name: digits).deployment.autoscaling: Value error, Got max_replicas=1 and "
                                 "min_replicas=3. max_replicas must be at least min_replicas"),
        ("unknown_kind.yaml", "models[0] (name: resnet).kind: unknown kind 'image-segmentation'. Kinds: "
                              "sentence-embedding, text-generation, torchscript"),
        ("duplicate_names.yaml", "Each needs its own name; repeated: twin"),
        ("missing_file.yaml", "models[0] (name: mine).source: Nothing at"),
        ("missing_signature.yaml", "models[0] (name: mine).signature: Field required"),
        ("bad_shape.yaml", "The first dimension is the batch and must be -1"),
        ("download_source.yaml", "raydio loads models from this machine only"),
        ("not_yaml.yaml", "not valid YAML"),
        ("serve_schema_error.yaml", "http_options.port"),
        ("does_not_exist.yaml", "no such file"),
    ],
)
def test_bad_serve_configs_fail_with_a_clear_message(fixture, expected):
    with pytest.raises(ConfigError) as info:
        load_serve_config(FIXTURES / fixture)
    assert expected in str(info.value)
    assert fixture in str(info.value)


def test_serve_options_come_from_args():
    args = RaydioAppArgs.model_validate({"models": [{"name": "chat", "kind": "text-generation", "source": "x.gguf",
                                                     "deployment": {"num_gpus": 0.5, "max_queued_requests": 3,
                                                                    "num_cpus": 0.25}}]})
    options = args.models[0].deployment.serve_options()
    assert options["ray_actor_options"] == {"num_cpus": 0.25, "num_gpus": 0.5}
    assert options["max_queued_requests"] == 3
    assert options["autoscaling_config"]["max_replicas"] == 1


def test_settings_read_the_raydio_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYDIO_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("RAYDIO_LOG_LEVEL", "DEBUG")
    settings = Settings()
    assert settings.cache_dir == tmp_path and settings.log_level == "DEBUG"


def test_settings_reject_unknown_keys_in_a_dotenv_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("RAYDIO_CACHE_DIRR=/tmp/typo\n")
    with pytest.raises(ValidationError, match="raydio_cache_dirr"):
        Settings()


def test_settings_reject_bad_values(monkeypatch):
    monkeypatch.setenv("RAYDIO_LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError, match="log_level"):
        Settings()


def test_readme_configuration_tables_match_the_models():
    from services.config import config_reference_markdown

    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- config-reference:start -->\n")[1].split("<!-- config-reference:end -->")[0]
    assert section == config_reference_markdown(), "run `make readme-config`"


def test_every_copy_of_the_serve_config_carries_the_one_catalogue():
    """configs/serve/local.yaml declares the models; the test config, the chart's values and the overlays are generated."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "scripts/serve_configs.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
