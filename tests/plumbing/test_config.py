"""The presets: every profile configures every stage, overrides apply, and a wrong field, profile,
stage or value is refused by name."""

import pytest

from histodistill import presets


@pytest.mark.parametrize("profile", presets.PROFILES)
def test_every_profile_has_every_stage(profile):
    for stage, cls in presets.STAGES.items():
        assert isinstance(presets.stage_config(stage, profile), cls)


def test_overrides_apply_and_none_means_profile_value():
    cfg = presets.stage_config("data", "demo", size=64, seed=None)
    assert cfg.size == 64
    assert cfg.seed == presets.stage_config("data", "demo").seed


def test_unknown_field_profile_and_stage_are_named():
    with pytest.raises(ValueError, match="no field.*sise"):
        presets.stage_config("data", "demo", sise=64)
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        presets.stage_config("data", "fast")
    with pytest.raises(ValueError, match="unknown stage"):
        presets.stage_config("nope", "demo")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"source": "zip"}, "not one of"),
        ({"source": "npz"}, "needs `path`"),
        ({"size": 4}, "outside"),
        ({"val_fraction": 0.0}, "strictly between"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "leave images for training"),
        ({"max_train_per_class": 0}, "at least 1"),
    ],
)
def test_invalid_data_configs_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        presets.stage_config("data", "demo", **changes)
