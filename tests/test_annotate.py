"""Annotation: SFT records from real trajectories, rule rationales, split hygiene, resume, demos."""

import json

import pytest
from typer.testing import CliRunner

from dreamgym.cli import app
from dreamgym.config import EnvConfig
from dreamgym.envs.base import make_env
from dreamgym.episodes import run_episode
from dreamgym.experience.annotate import record_key, rule_rationale, transition_records
from dreamgym.pipelines.annotate import read_records
from dreamgym.policies import RandomPolicy
from dreamgym.types import write_trajectories


@pytest.fixture(scope="module")
def trajectories():
    env = make_env(EnvConfig())
    oracle = env.oracle()
    train = [run_episode(env, oracle, t, max_turns=15) for t in env.tasks("train")[:3]]
    rand = [run_episode(env, RandomPolicy(1), t, max_turns=6) for t in env.tasks("train")[3:5]]
    test = [run_episode(env, oracle, t, max_turns=15) for t in env.tasks("test")[:2]]
    return train, rand, test


def test_records_carry_history_and_split(trajectories):
    traj = trajectories[0][0]
    recs = transition_records(traj)
    assert len(recs) == len(traj.steps)
    assert recs[0]["history"] == [] and recs[2]["history"] == [[s.observation, s.action] for s in traj.steps[:2]]
    assert recs[-1]["next_state"] == traj.final_observation and recs[-1]["done"] is True
    assert {r["split"] for r in recs} == {"train"} and record_key(recs[1]) == f"{traj.id}#1"


def test_webshop_rule_rationales_are_exact(trajectories):
    traj = trajectories[0][0]
    r = {rec["action"].split("[")[0] + ("[buy]" if "buy now" in rec["action"] else ""): rule_rationale(rec)
         for rec in transition_records(traj)}
    assert r["search"].startswith(f"Searching '{traj.steps[0].action[7:-1].lower()}' returns the results")
    assert "Page 1 (Total results: 50), led by B" in r["search"]
    assert traj.task.instruction.startswith("i want a medium roast coffee with colombian flavor")
    assert r["click[buy]"] == (
        "The item is 'Paxuma Basics Coffee, Arabica Beans, Medium Roast' at $14.49 (within the $50.00 limit); "
        "options chosen: colombian (requested), 12 ounce (pack of 3) (requested); request words in its title: "
        "medium, roast, coffee (3 of 7). Buying ends the episode; the purchased item earns reward 1 because it "
        "matches every requested attribute, option and the price limit.")
    option = next(rec for rec in transition_records(traj) if rec["action"] == "click[colombian]")
    assert rule_rationale(option) == ("Clicking the option 'colombian' selects it for the purchase; the page text "
                                      "stays the same (the item page does not mark the chosen option) and the "
                                      "reward is 0.")
    invalid = {**transition_records(traj)[1], "action": "click[nothing]"}
    invalid["next_state"] = invalid["state"]
    assert rule_rationale(invalid).startswith("'click[nothing]' is not a valid action on this page")
    generic = {**invalid, "env": "other", "next_state": "you see a door", "reward": 0.0, "done": False}
    assert rule_rationale(generic) == ("After 'click[nothing]', the environment shows: you see a door; "
                                       "reward 0, the episode continues.")


def test_annotate_cli_resume_and_split_hygiene(tmp_path, trajectories):
    train, rand, test = trajectories
    data = tmp_path / "trajs.jsonl"
    write_trajectories(data, train + test)
    out = tmp_path / "sft.jsonl"
    res = CliRunner().invoke(app, ["annotate", "--data", str(data), "--out", str(out), "--run-dir", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    n = sum(len(t.steps) for t in train)
    assert (s["records"], s["annotated"], s["cached"], s["skipped_eval_split_trajectories"]) == (n, n, 0, 2)
    recs = read_records(out)
    assert len(recs) == n and all(r["split"] == "train" and r["reasoning"] for r in recs)
    # resume: a torn tail is dropped, new trajectories are appended, old ones are not redone
    with out.open("a") as f:
        f.write('{"trajectory_id": "torn')
    write_trajectories(data, rand, append=True)
    res = CliRunner().invoke(app, ["annotate", "--data", str(data), "--out", str(out), "--run-dir", str(tmp_path / "b"),
                                   "teacher=none"])
    assert res.exit_code == 0, res.output
    s2 = json.loads((tmp_path / "b" / "summary.json").read_text())
    m = sum(len(t.steps) for t in rand)
    assert (s2["annotated"], s2["cached"]) == (m, n)
    recs = read_records(out)
    assert len(recs) == n + m and [r["reasoning"] for r in recs[n:]] == [None] * m


def test_annotate_with_buffer_attaches_demos_excluding_own_trajectory(tmp_path, trajectories):
    from dreamgym.config import ReplayConfig
    from dreamgym.replay.buffer import ReplayBuffer
    from dreamgym.replay.embed import build_encoder

    train, rand, _ = trajectories
    buf = ReplayBuffer(build_encoder("hashing"), ReplayConfig(encoder="hashing"))
    buf.add_trajectories(train + rand)
    buf.save(tmp_path / "buf")
    data = tmp_path / "t.jsonl"
    write_trajectories(data, train)
    out = tmp_path / "sft.jsonl"
    res = CliRunner().invoke(app, ["annotate", "--data", str(data), "--buffer", str(tmp_path / "buf"), "--out", str(out),
                                   "--run-dir", str(tmp_path / "r"), "demos_k=2"])
    assert res.exit_code == 0, res.output
    recs = read_records(out)
    assert all(len(r["demos"]) == 2 for r in recs)
    assert all(d["trajectory_id"] != r["trajectory_id"] for r in recs for d in r["demos"])


def test_annotate_requires_data(tmp_path):
    res = CliRunner().invoke(app, ["annotate", "--run-dir", str(tmp_path / "x")])
    assert res.exit_code != 0 and "needs --data" in str(res.exception)


def test_purchase_evidence_reads_price_options_since_the_item_and_title_words():
    from dreamgym.experience.annotate import purchase_evidence

    page = ("Instruction: [SEP] red running shoes in size 9, price lower than 40.00 dollars [SEP] Back to Search "
            "[SEP] < Prev [SEP] size [SEP] 8 [SEP] 9 [SEP] color [SEP] red [SEP] blue [SEP] Acme Trail Running Shoes, "
            "Blue [SEP] Price: $45.50 [SEP] Rating: 4 [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now")
    rec = {"instruction": "red running shoes in size 9, price lower than 40.00 dollars", "state": page,
           "history": [["p0", "search[red running shoes]"], ["p1", "click[b000000001]"], ["p2", "click[8]"],
                       ["p3", "click[< prev]"], ["p4", "click[b000000002]"], ["p5", "click[blue]"],
                       ["p6", "click[9]"], ["p7", "click[description]"]]}
    assert purchase_evidence(rec) == (
        "The item is 'Acme Trail Running Shoes, Blue' at $45.50 (over the $40.00 limit); options chosen: blue (not "
        "requested), 9 (requested); request words in its title: running, shoes (2 of 3).")
    assert "options chosen: none" in purchase_evidence({**rec, "history": []})
    assert "at $45.50;" in purchase_evidence({**rec, "instruction": "red running shoes"})
    assert "9 (not requested)" in purchase_evidence({**rec, "instruction": "red running shoes, 19 inch"})
