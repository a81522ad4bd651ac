"""Config loading: defaults <- presets (with includes) <- overrides; errors name source and key."""

import pytest

from dreamgym.config import CollectConfig, ConfigError, load_config, to_yaml


def test_defaults_then_files_then_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("episodes: 7\nenv:\n  webshop:\n    max_steps: 9\n")
    top = tmp_path / "top.yaml"
    top.write_text("includes: [base.yaml]\nepisodes: 11\n")
    cfg = load_config(CollectConfig, [top], ["split=test"])
    assert (cfg.episodes, cfg.env.webshop.max_steps, cfg.split) == (11, 9, "test")
    assert cfg.policy == "oracle"  # untouched default


def test_unknown_key_names_source_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"command line: key 'env.webshop.maxsteps'.*max_steps"):
        load_config(CollectConfig, [], ["env.webshop.maxsteps=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("polcy: random\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: key 'polcy'"):
        load_config(CollectConfig, [bad], [])


def test_bad_values_name_key_and_expected():
    with pytest.raises(ConfigError, match=r"key 'split': got 'tst', expected one of train, dev, test"):
        load_config(CollectConfig, [], ["split=tst"])
    with pytest.raises(ConfigError, match=r"episodes"):
        load_config(CollectConfig, [], ["episodes=notanint"])
    with pytest.raises(ConfigError, match=r"title_scorer"):
        load_config(CollectConfig, [], ["env.webshop.title_scorer=nltk"])
    with pytest.raises(ConfigError, match=r"not of the form key=value"):
        load_config(CollectConfig, [], ["episodes"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(CollectConfig, [tmp_path / "nope.yaml"], [])
    bad = tmp_path / "broken.yaml"
    bad.write_text("episodes: [1,\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML"):
        load_config(CollectConfig, [bad], [])
    cyc = tmp_path / "cyc.yaml"
    cyc.write_text("includes: [cyc.yaml]\n")
    with pytest.raises(ConfigError, match=r"includes itself"):
        load_config(CollectConfig, [cyc], [])


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(CollectConfig, [], ["episodes=3", "env.webshop.max_steps=4"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(CollectConfig, [path], []) == cfg
