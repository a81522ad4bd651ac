"""Curriculum task generator: V_tau to exact values (groups and embedding clusters), seed selection,
the lambda cap, split hygiene, dedup/eviction, metrics and log, state_dict resume, and the generator
on handcrafted output and on a tiny random model."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dreamgym.config import ConfigError, CurriculumConfig, ModelConfig
from dreamgym.curriculum import generator as generator_module
from dreamgym.curriculum.generator import TaskGenerator, difficulty, variations_from_text
from dreamgym.curriculum.sampler import (CurriculumError, CurriculumLog, TaskPool, cluster_variances, group_means,
                                         group_variances, grow_pool, kmeans, reward_variance, select_seeds)
from dreamgym.metrics import check_metric_names
from dreamgym.models.generation import GenerationSettings
from dreamgym.types import Task


def _task(i: int | str, split: str = "train", instruction: str | None = None) -> Task:
    return Task(id=f"t{i}", instruction=instruction or f"i need product number {i}, price lower than 10.00 dollars",
                env="webshop", split=split, goal={"asin": f"B{i}", "attributes": ["red"]})


# -- V_tau -----------------------------------------------------------------------------------------

def test_reward_variance_is_the_papers_population_variance():
    assert reward_variance([1, 0, 0, 1]) == 0.25
    assert reward_variance([1, 1, 1, 0]) == 0.1875
    assert reward_variance([1.0, 1.0, 1.0]) == 0.0
    assert reward_variance([0.5, 1.0]) == 0.0625
    assert reward_variance([]) == 0.0


def test_group_variances_and_means_per_task():
    ids = ["a", "b", "a", "b", "a", "b", "c"]
    rewards = [1, 1, 0, 1, 0, 1, 0.5]
    v = group_variances(ids, rewards)
    assert list(v) == ["a", "b", "c"]
    assert v["a"] == pytest.approx(2 / 9) and v["b"] == 0.0 and v["c"] == 0.0
    assert group_means(ids, rewards) == {"a": pytest.approx(1 / 3), "b": 1.0, "c": 0.5}
    with pytest.raises(ValueError, match="one reward per rollout"):
        group_variances(["a"], [1, 0])


def test_cluster_variances_on_separable_embeddings():
    ids = ["x1", "x2", "y1", "y2", "x3", "y3", "x1"]    # x1 rolled out twice: only its first row is clustered
    rewards = [1, 1, 1, 1, 0, 1, 0]
    x, y = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    emb = np.stack([x, x + [0, .05, 0], y, y + [.05, 0, 0], x - [0, .05, 0], y, y])
    expected = {"x1": 0.25, "x2": 0.25, "y1": 0.0, "y2": 0.0, "x3": 0.25, "y3": 0.0}   # X: [1, 1, 0, 0]; Y: [1, 1, 1]
    for seed in (0, 1, 7):
        assert cluster_variances(ids, rewards, emb, n_clusters=2, seed=seed) == expected
    assert kmeans(emb[:6], 2, seed=3).tolist() == [0, 0, 1, 1, 0, 1]
    one = cluster_variances(ids, rewards, emb, n_clusters=1)
    assert set(one.values()) == {reward_variance(rewards)}
    singletons = cluster_variances(ids, rewards, emb, n_clusters=50)   # k capped at distinct rows
    assert singletons == {"x1": 0.25, "x2": 0.0, "y1": 0.0, "y2": 0.0, "x3": 0.0, "y3": 0.0}
    with pytest.raises(ValueError, match="one row per rollout"):
        cluster_variances(ids, rewards, emb[:3], n_clusters=2)


def test_select_seeds_top_k_ties_by_id_and_no_zero_variance():
    v = {"b": 0.25, "a": 0.25, "c": 0.1875, "d": 0.0, "e": 1e-9, "f": 0.0625}
    assert select_seeds(v, 2) == ["a", "b"]
    assert select_seeds(v, 10) == ["a", "b", "c", "f"]
    assert select_seeds(v, 10, min_variance=0.0) == ["a", "b", "c", "f", "e"]
    assert select_seeds(v, 0) == [] and select_seeds({"d": 0.0}, 3) == []
    drawn = select_seeds(v, 3, rng=np.random.default_rng(0))
    assert set(drawn[:2]) == {"a", "b"} and drawn[2] == "c"
    assert drawn == select_seeds(v, 3, rng=np.random.default_rng(0))


# -- the pool --------------------------------------------------------------------------------------

def test_pool_refuses_dev_and_test_tasks():
    with pytest.raises(CurriculumError, match="split 'dev'.*split hygiene"):
        TaskPool([_task(0), _task(1, "dev")])
    with pytest.raises(CurriculumError, match="split 'test'"):
        TaskPool([_task(0, "test")])
    with pytest.raises(CurriculumError, match="at least one"):
        TaskPool([])
    pool = TaskPool([_task(0)])
    with pytest.raises(CurriculumError, match="not in the curriculum pool"):
        pool.add_variations(_task(9, "dev"), ["a dev goal must never seed a variation"])
    with pytest.raises(CurriculumError, match="not in the curriculum pool"):
        pool.add_variations(_task(0, "test"), ["same id, but a test task"])
    with pytest.raises(CurriculumError, match="split 'test'"):
        TaskGenerator(None, None).generate([_task(0, "test")], 2)
    assert len(pool.synthetic) == 0


def test_sample_batch_respects_the_lambda_cap_exactly():
    pool = TaskPool([_task(i) for i in range(10)], seed=1)
    batch = pool.sample_batch(10, 0.3)
    assert sorted(t.id for t in batch) == sorted(f"t{i}" for i in range(10))   # no synthetic yet: all originals
    pool.add_variations(pool.get("t0"), [f"variation number {i} of the task" for i in range(5)])
    for lam, n, n_syn in [(0.3, 10, 3), (0.0, 10, 0), (1.0, 4, 4), (1.0, 8, 5), (0.25, 10, 2), (0.5, 1, 0)]:
        batch = pool.sample_batch(n, lam)
        assert len(batch) == n and sum(t.goal.get("generated", False) for t in batch) == n_syn, (lam, n)
        assert len({t.id for t in batch}) == n                              # no repeats while enough tasks
    pool.add_variations(pool.get("t1"), [f"another variation {i} of the task" for i in range(25)])
    assert sum("~var" in t.id for t in pool.sample_batch(100, 0.29)) == 29     # floor(0.29 * 100), no float slip
    counts = np.unique([t.id for t in pool.sample_batch(25, 0.0)], return_counts=True)[1]
    assert counts.max() - counts.min() <= 1                                   # each original once before repeats
    with pytest.raises(ValueError, match="lambda_cap"):
        pool.sample_batch(4, 1.5)


def test_variations_keep_the_seed_goal_dedup_and_count_per_seed():
    pool = TaskPool([_task(0, instruction="I need a blue shirt"), _task(1)])
    seed = pool.get("t0")
    added = pool.add_variations(seed, ["Buy a red  shirt", "buy a RED shirt", "", "i need a BLUE shirt",
                                       "find wool socks"], requested=6)
    assert [(t.id, t.instruction) for t in added] == [("t0~var0", "Buy a red shirt"), ("t0~var1", "find wool socks")]
    assert added[0].goal == {"asin": "B0", "attributes": ["red"], "seed_task": "t0", "generated": True}
    assert (added[0].split, added[0].env) == ("train", "webshop")
    added[0].goal["attributes"].append("large")
    assert seed.goal["attributes"] == ["red"]                                 # goals are copies
    assert pool.metrics()["curriculum/rejected_variations"] == 4.0            # 6 asked, 2 kept
    again = pool.add_variations(added[1], ["find wool socks in grey"])
    assert again[0].id == "t0~var1~var0" and again[0].goal["seed_task"] == "t0~var1"


def test_eviction_drops_the_oldest_generated_tasks_first():
    pool = TaskPool([_task("a"), _task("b")], max_synthetic=3)
    pool.add_variations(pool.get("ta"), ["first variation of a", "second variation of a"])
    pool.update_scores({"ta~var0": 0.25, "ta": 0.25})
    pool.add_variations(pool.get("tb"), ["first variation of b", "second variation of b"])
    assert [t.id for t in pool.synthetic] == ["ta~var1", "tb~var0", "tb~var1"]
    assert "ta~var0" not in pool and "ta~var0" not in pool.scores and pool.scores == {"ta": 0.25}
    assert [t.id for t in pool.add_variations(pool.get("ta"), ["FIRST variation of a"])] == ["ta~var2"]
    assert [t.id for t in pool.synthetic] == ["tb~var0", "tb~var1", "ta~var2"]
    assert pool.log()["evicted"] == 2 and len(pool) == 5
    assert TaskPool([_task(0)], max_synthetic=0).add_variations(_task(0), ["kept nowhere at all"]) == []


class _FakeGenerator:
    def __init__(self, answers: dict[str, list[str]]):
        self.answers, self.calls = answers, []

    def generate(self, seeds, n, success_rates=None):
        self.calls.append(([s.id for s in seeds], n, dict(success_rates or {})))
        return {s.id: self.answers.get(s.id, []) for s in seeds}


def test_iteration_metrics_log_and_schedule_exact(tmp_path):
    pool = TaskPool([_task(i) for i in range(4)], max_synthetic=10, seed=0)
    cfg = CurriculumConfig(seeds_per_iteration=3, variations_per_seed=2, every_n_iterations=2)
    batch = pool.sample_batch(4, cfg.synthetic_share_cap)
    assert not any("~var" in t.id for t in batch)
    ids = [t for t in ("t0", "t1", "t2", "t3") for _ in range(4)]
    rewards = [1, 0, 0, 1] + [1, 1, 1, 0] + [0, 0, 0, 0] + [0, 0, 0, 1]
    pool.update_scores(group_variances(ids, rewards), group_means(ids, rewards))
    fake = _FakeGenerator({"t0": ["buy two red shirts under 5 dollars", "buy a red shirt and a hat"],
                           "t1": ["BUY TWO RED SHIRTS UNDER 5 DOLLARS", "an easier task for seed one"]})
    new = grow_pool(pool, fake, cfg)
    (seed_ids, n, rates), = fake.calls
    assert seed_ids[0] == "t0" and set(seed_ids) == {"t0", "t1", "t3"} and n == 2
    assert rates == {"t0": 0.5, "t1": 0.75, "t3": 0.25}
    assert {s: [t.id for t in ts] for s, ts in new.items()} == {
        "t0": ["t0~var0", "t0~var1"], "t1": ["t1~var0"], "t3": []}
    m = pool.metrics()
    assert m == {"curriculum/pool_size": 7.0, "curriculum/synthetic_tasks": 3.0, "curriculum/synthetic_share": 0.0,
                 "curriculum/mean_variance": 0.15625, "curriculum/max_variance": 0.25, "curriculum/seed_tasks": 3.0,
                 "curriculum/selected_success_rate": 0.5, "curriculum/new_tasks": 3.0,
                 "curriculum/rejected_variations": 3.0}
    assert check_metric_names(m) == []
    entry = pool.log()
    assert {k: entry[k] for k in ("iteration", "pool_size", "original_tasks", "synthetic_tasks", "drawn",
                                  "synthetic_drawn", "new_variations", "rejected_variations", "evicted")} == {
        "iteration": 0, "pool_size": 7, "original_tasks": 4, "synthetic_tasks": 3, "drawn": 4, "synthetic_drawn": 0,
        "new_variations": 3, "rejected_variations": 3, "evicted": 0}
    assert entry["examples"][0] == {"id": "t0~var0", "seed_task": "t0",
                                    "instruction": "buy two red shirts under 5 dollars"}
    assert len(entry["examples"]) == 3 and entry["seed_tasks"] == seed_ids
    assert pool.iteration == 1 and pool.metrics()["curriculum/new_tasks"] == 0.0

    pool.sample_batch(4, cfg.synthetic_share_cap)
    pool.sample_batch(6, cfg.synthetic_share_cap)                            # 2 + 3 of 10 drawn are generated
    assert pool.metrics()["curriculum/synthetic_share"] == 0.5
    assert grow_pool(pool, fake, cfg) == {} and len(fake.calls) == 1         # iteration 1: off-schedule
    assert grow_pool(pool, fake, CurriculumConfig(enabled=False)) == {}
    pool.log()
    path = pool.history.write_jsonl(tmp_path / "curriculum" / "log.jsonl")
    assert CurriculumLog.read_jsonl(path).entries == pool.history.entries and len(pool.history) == 2


def test_state_dict_round_trip_gives_the_same_future(tmp_path):
    pool = TaskPool([_task(i) for i in range(6)], max_synthetic=4, seed=5)
    pool.add_variations(pool.get("t2"), ["variation alpha of two", "variation beta of two", "variation gamma"])
    pool.sample_batch(5, 0.4)
    pool.update_scores({"t0": 0.25, "t1": 0.25, "t2": 0.1875, "t2~var0": 0.25}, {"t0": 0.5, "t1": 0.5})
    pool.log()
    pool.sample_batch(3, 0.4)
    buf = io.BytesIO()
    torch.save(pool.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)                                # plain values only
    resumed = TaskPool([_task("other")])
    resumed.load_state_dict(state)
    state["synthetic"].clear()                                                # the pool holds its own copies
    assert resumed.metrics() == pool.metrics() and resumed.history.entries == pool.history.entries
    for _ in range(3):
        assert [t.id for t in resumed.sample_batch(5, 0.4)] == [t.id for t in pool.sample_batch(5, 0.4)]
        assert resumed.select_seeds(2) == pool.select_seeds(2)
    new_a = pool.add_variations(pool.get("t2"), ["variation delta"])
    new_b = resumed.add_variations(resumed.get("t2"), ["variation delta"])
    assert [t.to_dict() for t in new_a] == [t.to_dict() for t in new_b] and new_a[0].id == "t2~var3"
    assert resumed.log() == pool.log()
    with pytest.raises(ConfigError, match="curriculum.synthetic_share_cap"):
        CurriculumConfig(synthetic_share_cap=1.5)


# -- the generator ---------------------------------------------------------------------------------

def test_variations_from_handcrafted_output_and_difficulty():
    seed = "I need a blue shirt, price lower than 40.00 dollars"
    text = ("Here are 2 harder tasks:\n1. i need a red cotton shirt in size xl, price lower than 30.00 dollars\n"
            "2. i need a BLUE shirt, price lower than 40.00 dollars\n3) i need a green hat under 20 dollars\n"
            "4. i need a yellow scarf under 15 dollars")
    assert variations_from_text(text, seed, 2) == [
        "i need a red cotton shirt in size xl, price lower than 30.00 dollars", "i need a green hat under 20 dollars"]
    assert variations_from_text(text, seed, 0) == [] and variations_from_text("", seed, 2) == []
    assert variations_from_text("1. i need socks\n<think>the next tasks could be about shirts", seed, 2) == [
        "i need socks"]                                                      # cut-off reasoning is not a task
    assert variations_from_text("<think>two tasks</think>\n1. i need a green hat please", seed, 2) == [
        "i need a green hat please"]
    assert [difficulty(r) for r in (0.75, 0.25, 0.5, None)] == [True, False, None, None]
    assert difficulty(0.5, threshold=0.4) is True


@pytest.fixture(scope="module")
def tiny():
    from dreamgym.models.loading import load_model
    return load_model(ModelConfig(name="tiny-random"))


def test_generator_batches_all_seeds_and_parses_handcrafted_answers(tiny, monkeypatch):
    model, tok = tiny
    seeds = [_task(0), _task(1), _task(2), _task(0)]
    answers = ["1. i need product number 0 in green, price lower than 5.00 dollars\n2. i need two of product 0",
               "!!", "Here you go:\n- i need product number 2 without the red attribute\n"]
    seen = []

    def fake_generate_ids(model_arg, tok_arg, prompts, settings, generator_seed=None):
        seen.append((model_arg, [tok.decode(p) for p in prompts], generator_seed))
        return [tok.encode(a, add_special_tokens=False) for a in answers]

    monkeypatch.setattr(generator_module, "generate_ids", fake_generate_ids)
    gen = TaskGenerator.from_predictor(SimpleNamespace(model=model, tokenizer=tok), GenerationSettings(), seed=10)
    out = gen.generate(seeds, 2, {"t0": 0.75, "t1": 0.25})
    assert out == {"t0": ["i need product number 0 in green, price lower than 5.00 dollars", "i need two of product 0"],
                   "t1": [], "t2": ["i need product number 2 without the red attribute"]}
    (model_arg, prompts, gen_seed), = seen
    assert model_arg is model and gen_seed == 10 and len(prompts) == 3          # one call, shared weights
    assert "harder" in prompts[0] and "easier" in prompts[1] and "similar variations" in prompts[2]
    assert "WebShop" in prompts[0] and "product number 1" in prompts[1]
    assert (gen.stats.prompts, gen.stats.empty, gen.stats.variations) == (3, 1, 3)
    gen.generate(seeds[:1], 2)
    assert seen[-1][2] == 11 and gen.state_dict()["calls"] == 2
    assert gen.generate([], 2) == {} and len(seen) == 2


def test_generator_on_a_tiny_random_model_never_raises(tiny):
    model, tok = tiny
    cfg = CurriculumConfig(max_new_tokens=16, variations_per_seed=2, seeds_per_iteration=2)
    gen = TaskGenerator.from_config(model, tok, cfg)
    out = gen.generate([_task(0), _task(1)], 2, {"t0": 0.5})
    assert list(out) == ["t0", "t1"] and len(gen.last_texts) == 2
    assert all(isinstance(v, list) and len(v) <= 2 and all(isinstance(s, str) for s in v) for v in out.values())
    assert gen.stats.prompts == 2 and gen.stats.empty == sum(not v for v in out.values())
    assert 0 < gen.stats.tokens_generated <= 2 * 16
    pool = TaskPool([_task(0), _task(1)])
    pool.update_scores({"t0": 0.25, "t1": 0.0}, {"t0": 0.5, "t1": 1.0})
    new = grow_pool(pool, gen, cfg)                                             # t1 has no signal: not a seed
    assert list(new) == ["t0"] and all(t.goal["seed_task"] == "t0" and t.split == "train" for t in new["t0"])
