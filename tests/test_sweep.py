"""`dreamgym sweep` end to end on a tiny random world model (one row per point, k really changes the
prompts, reused points, files and TensorBoard), the lambda sweep as train-policy runs, the pure parts
to exact values (point expansion, table, point configs and their errors), and the BM25 encoder (exact
weights, fit saved with the buffer, re-embedding a buffer)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from dreamgym.cli import app
from tests.audit_fixtures import write_audit_inputs
from dreamgym.config import ConfigError, ReplayConfig, SweepConfig, load_config
from dreamgym.pipelines.sweep import Point, expand_points, format_table, point_config, reembed_buffer
from dreamgym.replay.buffer import ReplayBuffer
from dreamgym.replay.embed import BM25Encoder, build_encoder
from dreamgym.runs import file_sha256

PRESET = "configs/sweep/debug.yaml"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Oracle trajectories (held-out file + a hashing buffer of other ones) and a tiny-random adapter."""
    return write_audit_inputs(tmp_path_factory.mktemp("sweep"), n_tasks=5)


def test_cli_debug_sweep_one_row_per_point_and_k_changes_the_prompt(inputs, tmp_path):
    records_hash = file_sha256(inputs / "buffer" / "records.jsonl")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["sweep", "-c", PRESET, "--data", str(inputs / "held_out.jsonl"),
                                      "--world-model", str(inputs / "adapter"), "--buffer", str(inputs / "buffer"),
                                      "--run-dir", str(run), "--seed", "1"])
    assert result.exit_code == 0, result.output
    s = json.loads((run / "summary.json").read_text())
    assert s["command"] == "sweep" and s["seed"] == 1 and s["n_points"] == 10 == len(s["points"])
    table = (run / "sweep.md").read_text().splitlines()
    assert len(table) == 2 + 10 and table[0].startswith("| axis | value | reward acc | success P | success R")
    assert len((run / "sweep.csv").read_text().splitlines()) == 1 + 10
    rows = {(p["axis"], p["value"]): p for p in s["points"]}
    k = "eval.synthetic.prompt.demos_k"
    assert rows[(k, "0")]["prompt_tokens"] < rows[("base", "-")]["prompt_tokens"] < rows[(k, "4")]["prompt_tokens"]
    assert rows[(k, "0")]["retrieval"] is False and rows[(k, "4")]["retrieval"] is True
    h = "eval.synthetic.prompt.history_turns"
    assert rows[(h, "0")]["prompt_tokens"] < rows[(h, "3")]["prompt_tokens"]
    # values equal to the base point reuse its pass; bm25 re-embeds the buffer (a distinct pass)
    assert rows[(k, "1")]["same_as"] == rows[("encoder", "hashing")]["same_as"] == "00-base"
    assert rows[("eval.synthetic.prompt.reasoning", "true")]["same_as"] == "00-base"
    assert rows[("eval.synthetic.prompt.reasoning", "false")]["reasoning"] is False
    assert rows[("encoder", "bm25")]["encoder"] == "bm25" and rows[("encoder", "bm25")]["same_as"] is None
    for p in s["points"]:
        assert p["n_transitions"] == 8 and 0.0 <= p["reward_accuracy"] <= 1.0 and p["parse_fail_rate"] == 1.0
    assert s["synthetic_transitions"] == 8 * sum(1 for p in s["points"] if not p["same_as"])
    assert "embed_bm25" in s["wall_clock_s"] and s["held_out_in_buffer"] == 0
    for axis in ("base", k, "encoder"):
        assert list((run / "tb" / axis).glob("events.out.tfevents.*")), axis
    assert "| encoder | bm25 |" in result.output and result.output.strip().endswith(str(run))
    assert file_sha256(inputs / "buffer" / "records.jsonl") == records_hash        # the sweep only reads it


def test_lambda_sweep_runs_train_policy_points(inputs, tmp_path):
    from dreamgym.pipelines.sweep import sweep

    cfg = load_config(SweepConfig, ["configs/sweep/lambda_debug.yaml"], ["train.max_iterations=1", "select=[]"])
    s = sweep(cfg, world_model=str(inputs / "adapter"), buffer_dir=inputs / "buffer", run_dir=tmp_path / "run")
    assert [p["value"] for p in s["points"]] == ["-", "0", "1"]
    assert s["points"][0]["same_as"] is None and s["points"][1]["same_as"] is None      # base lambda is 0.5
    for p in s["points"]:
        assert p["iterations"] == 1 and p["real_transitions"] == 0 and p["synthetic_transitions"] > 0
        assert (tmp_path / "run" / "points" / p["label"] / "summary.json").is_file()
    assert "| train.curriculum.synthetic_share_cap | 1 |" in s["table_md"]


# -- pure parts ---------------------------------------------------------------------------------------

def test_expand_points_one_at_a_time_and_grid():
    axes = {"a.k": [0, 2], "encoder": ["minilm", "bm25"]}
    assert expand_points(axes, grid=False) == [
        Point("base", "-"), Point("a.k", "0", {"a.k": 0}), Point("a.k", "2", {"a.k": 2}),
        Point("encoder", "minilm", {"encoder": "minilm"}), Point("encoder", "bm25", {"encoder": "bm25"})]
    grid = expand_points({"a.k": [0, 2], "r": [True, False]}, grid=True)
    assert [p.value for p in grid] == ["a.k=0, r=true", "a.k=0, r=false", "a.k=2, r=true", "a.k=2, r=false"]
    assert {p.axis for p in grid} == {"grid"} and grid[3].overrides == {"a.k": 2, "r": False}


def test_format_table_exact():
    rows = [{"axis": "base", "value": "-", "acc": 0.5, "n": 8, "same_as": None},
            {"axis": "k", "value": "1", "acc": 2 / 3, "n": 8, "same_as": "00-base"},
            {"axis": "k", "value": "a|b", "n": 8}]
    assert format_table(rows, (("acc", "reward acc"), ("n", "n"))) == (
        "| axis | value | reward acc | n |\n"
        "|---|---|---:|---:|\n"
        "| base | - | 0.500 | 8 |\n"
        "| k | 1 (= 00-base) | 0.667 | 8 |\n"
        "| k | a\\|b | n/a | 8 |\n")


def test_point_config_applies_overrides_and_names_bad_keys():
    cfg = load_config(SweepConfig, [PRESET], ["seed=4"])
    p = point_config(cfg, {"eval.synthetic.prompt.demos_k": 4, "encoder": "bm25"})
    assert (p.eval.synthetic.prompt.demos_k, p.encoder, p.eval.seed) == (4, "bm25", 4)
    assert cfg.eval.synthetic.prompt.demos_k == 1                       # the base is untouched
    with pytest.raises(ConfigError, match=r"axes.eval.synthetic.prompt.demo_k.*not a config key"):
        point_config(cfg, {"eval.synthetic.prompt.demo_k": 2})
    with pytest.raises(ConfigError, match=r"demos_k.*got -1"):
        point_config(cfg, {"eval.synthetic.prompt.demos_k": -1})
    with pytest.raises(ConfigError, match=r"axes.eval.synthetic.prompt.demos_k.*'many'"):
        point_config(cfg, {"eval.synthetic.prompt.demos_k": "many"})


def test_config_refuses_lambda_in_the_audit_fixed_keys_and_huge_grids():
    with pytest.raises(ConfigError, match=r"axes.train.curriculum.synthetic_share_cap.*target=train-policy"):
        load_config(SweepConfig, [PRESET], ["axes={'train.curriculum.synthetic_share_cap':[0.0,0.5]}"])
    with pytest.raises(ConfigError, match=r"axes.eval.max_transitions.*fixed"):
        load_config(SweepConfig, [PRESET], ["axes={'eval.max_transitions':[4,8]}"])
    with pytest.raises(ConfigError, match=r"max_points.*48 points"):
        load_config(SweepConfig, [PRESET], ["grid=true", "axes.encoder=[hashing,bm25,minilm,x]", "max_points=40"])
    with pytest.raises(ConfigError, match=r"select.*\['nope'\]"):
        load_config(SweepConfig, [PRESET], ["select=[nope]"])
    cfg = load_config(SweepConfig, [PRESET], ["select=[encoder]"])
    assert list(cfg.selected_axes()) == ["encoder"] and cfg.n_points() == 3


# -- the BM25 encoder -------------------------------------------------------------------------------

def test_bm25_encoder_exact_weights():
    enc = BM25Encoder(dim=1 << 20, bigrams=False).fit(["a b", "a c"])      # wide: no hash collisions
    assert (enc.n_docs, enc.avglen) == (2, 2.0)
    vec = enc.encode(["a b"])[0]
    idf_a, idf_b = math.log(1 + 0.5 / 2.5), math.log(1 + 1.5 / 1.5)        # df(a) = 2, df(b) = 1
    nz = np.sort(vec[vec != 0])                                             # tf part = 1 at |d| = avglen
    np.testing.assert_allclose(nz, np.array([idf_a, idf_b]) / math.hypot(idf_a, idf_b), rtol=1e-6)
    long = enc.encode(["b b a a a a"])[0]                                  # |d| = 3 avglen: saturation + length
    tf = lambda n: n * 2.2 / (n + 1.2 * (0.25 + 0.75 * 3))                 # noqa: E731
    np.testing.assert_allclose(np.sort(long[long != 0]) * np.linalg.norm([idf_a * tf(4), idf_b * tf(2)]),
                               np.sort([idf_a * tf(4), idf_b * tf(2)]), rtol=1e-6)
    unfitted = BM25Encoder(dim=64).encode(["x y", ""])
    assert unfitted.shape == (2, 64) and unfitted.dtype == np.float32 and not unfitted[1].any()


def test_bm25_buffer_fits_once_saves_the_fit_and_ranks_by_rare_words(tmp_path):
    from dreamgym.types import Transition

    def tr(i, state, action):
        return Transition(trajectory_id=f"t{i}", step=0, env="webshop", source="real", task_id=f"k{i}",
                          instruction="x", state=state, action=action, next_state="n", reward=0.0, done=False)

    buf = ReplayBuffer(build_encoder("bm25", hashing_dim=256), ReplayConfig(encoder="bm25", hashing_dim=256))
    buf.add([tr(0, "page of red shoes", "click[next]"), tr(1, "page of gluten free snacks", "click[next]"),
             tr(2, "page of blue shirts", "click[next]")])
    assert buf.encoder.fitted and buf.encoder.n_docs == 3
    assert buf.query("gluten snacks", "click[next]", k=1)[0].trajectory_id == "t1"
    buf.save(tmp_path / "b")
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    assert meta["encoder"] == "bm25" and meta["encoder_state"]["n_docs"] == 3
    loaded = ReplayBuffer.load(tmp_path / "b")
    np.testing.assert_allclose(loaded.encoder.idf, buf.encoder.idf)
    q = ("blue shirts", "click[next]")
    np.testing.assert_allclose(loaded.encoder.encode(["x " + q[0]]), buf.encoder.encode(["x " + q[0]]))
    assert loaded.query(*q, k=1)[0].trajectory_id == "t2"


def test_reembed_buffer_keeps_records_and_switches_encoder(inputs):
    src = ReplayBuffer.load(inputs / "buffer")
    new = reembed_buffer(src, "bm25")
    assert new.encoder.name == "bm25" and new.dim == src.cfg.hashing_dim
    assert [t.to_dict() for t in new.transitions()] == [t.to_dict() for t in src.transitions()]
    t = src.transitions()[3]
    assert new.query(t.state, t.action, k=1)[0].to_dict() == t.to_dict()
    assert src.encoder.name == "hashing"                                    # the source is untouched
