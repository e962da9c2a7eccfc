"""Settings are parsed once, typed and range-checked: a bad value is one line naming key and range."""

import pytest

from ml_assets.core.config import SettingsError
from ml_assets.core.settings import load_settings


def _load(tmp_path, text: str):
    (tmp_path / "ml_assets.toml").write_text(text)
    return load_settings(tmp_path)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[features]\nchunk_days = 0\n", "features.chunk_days = 0: must be a whole number >= 1"),
        (
            "[features]\nwindows = [0, -7]\n",
            "features.windows = 0 (item 1): must be a non-empty list of whole numbers >= 1",
        ),
        (
            "[training]\ntest_fraction = 1.5\n",
            "training.test_fraction = 1.5: must be a number between 0 and 1, both excluded",
        ),
        (
            '[models.churn]\nhorizon_days = "14"\n',
            "models.churn.horizon_days = '14': must be a whole number >= 1",
        ),
        (
            "[cleaning]\nwatermark = 5\n",
            "cleaning.watermark: unknown key; known: ['dedup_horizon_days', 'earliest_event_date', "
            "'max_field_chars', 'max_future_skew_hours', 'max_properties_chars', 'watermark_days']",
        ),
        ("[models.churn]\ntuning_trial = 3\n", "models.churn.tuning_trial: unknown key; known: ["),
        ("[nope]\na = 1\n", "unknown section(s) ['[nope]']"),
        (
            '[performance]\nmetric = "pr_auc"\n',
            "performance.metric = 'pr_auc': must be one of ['brier', 'log_loss', 'roc_auc']",
        ),
        (
            '[models.churn]\nlabel = "weekly"\n',
            "models.churn.label = 'weekly': must be one of ['rolling', 'new_player', 'first_purchase']",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key_and_what_is_allowed(tmp_path, text, line):
    with pytest.raises(SettingsError) as err:
        _load(tmp_path, text)
    message = str(err.value)
    assert line in message
    assert message.startswith(str(tmp_path / "ml_assets.toml"))
    # one problem, one line (windows = [0, -7] has two bad items, so two lines)
    assert len(message.splitlines()) == (2 if "windows" in text else 1)


def test_types_are_strict_and_values_typed_once(tmp_path):
    settings = _load(
        tmp_path,
        "[features]\nwindows = [1, 7]\n[drift]\npsi = 1\n[training]\ntest_fraction = 0.25\n"
        "[models.churn]\nhorizon_days = 7\ntuning_trials = 0\n",
    )
    assert settings.features.windows == [1, 7] and settings.features.chunk_days == 7
    assert settings.drift.thresholds().psi == 1.0  # an integer is a fine number
    churn = settings.spec("churn")
    assert (churn.label.horizon_days, churn.tuning.trials, churn.test_fraction) == (7, 0, 0.25)
    # the shipped spec is the base: what the table does not set keeps its shipped value
    assert churn.label.kind == "rolling" and churn.promotion.metric == "roc_auc"
    with pytest.raises(SettingsError, match="training.seed = True: must be a whole number"):
        _load(tmp_path, "[training]\nseed = true\n")


def test_defaults_without_a_file(tmp_path):
    settings = load_settings(tmp_path)
    assert [s.name for s in settings.specs] == ["churn", "first_purchase"]
    assert settings.lake_uri == str(tmp_path / "lake")
    assert settings.webhook_url is None and settings.performance.metric == "roc_auc"
