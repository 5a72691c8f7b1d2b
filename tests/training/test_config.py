"""TrainConfig: the paper's defaults, and bad values refused at load time with the field named."""

from __future__ import annotations

import pytest

from otdistill.config import ConfigError, from_dict
from otdistill.training import TrainConfig


def test_defaults_are_the_papers() -> None:
    cfg = TrainConfig()
    assert cfg.loss == "multilevel_ot"
    assert (cfg.top_k, cfg.temperature, cfg.sinkhorn_temperature) == (50, 1.0, 2.0)
    assert (cfg.sinkhorn_epsilon, cfg.sinkhorn_iters) == (0.1, 20)
    assert (cfg.alpha, cfg.beta, cfg.gamma, cfg.uld_weight) == (0.15, 0.1, 0.1, 0.15)
    assert cfg.teacher_source == "live" and cfg.precision == "auto"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loss": "mse"}, "TrainConfig.loss must be one of"),
        ({"top_k": 0}, "TrainConfig.top_k must be > 0"),
        ({"sinkhorn_epsilon": 0.0}, "TrainConfig.sinkhorn_epsilon must be > 0"),
        ({"alpha": -0.1}, "TrainConfig.alpha must be >= 0"),
        ({"teacher_source": "cache"}, "teacher_cache_uri is not set"),
        (
            {"loss": "kl", "teacher_source": "cache", "teacher_cache_uri": "/x"},
            "loss 'kl' needs the teacher's full",
        ),
        ({"checkpoint_uri": "gs://bucket/x"}, "must be an s3:// URI"),
        ({"max_steps": 0, "num_epochs": 0}, "set max_steps > 0 or num_epochs > 0"),
    ],
)
def test_bad_values_name_the_field(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides)  # type: ignore[arg-type]


def test_yaml_mapping_round_trip_and_unknown_keys() -> None:
    cfg = from_dict(TrainConfig, {"loss": "uld", "learning_rate": 1e-4, "lora_target_modules": ["q_proj"]})
    assert cfg.loss == "uld" and cfg.lora_target_modules == ["q_proj"]
    assert from_dict(TrainConfig, cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="learnig_rate"):
        from_dict(TrainConfig, {"learnig_rate": 1e-4})
    with pytest.raises(ConfigError, match="loss"):
        from_dict(TrainConfig, {"loss": "mse"})
