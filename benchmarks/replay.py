"""Replay buffer benchmark: insert throughput, query latency (p50/p99) and recall@k of the hnswlib
index against exact brute-force search, through `ReplayBuffer` itself (its add and search paths).

    python benchmarks/replay.py --n 10000 --quick             # < 1 min: synthetic vectors + real sample
    python benchmarks/replay.py --n 10000 --n 100000          # full: real MiniLM keys at 10k
    python benchmarks/replay.py --n 1000000 --quick           # optional 1M (memory ~5 GB, slow build)

Keys: phi(s, a) of WebShop transitions collected with `dreamgym collect` (oracle + random policies on
the train split; pass --data FILE to use your own), embedded with the default MiniLM encoder.
MiniLM runs tens of texts per second on a small CPU, so real keys are used up to --real-max (full
mode) and the rest of each size is filled with synthetic keys: low-rank Gaussian clusters fitted
to the real sample (its mean and top principal directions) plus isotropic noise, normalised.
`--quick` embeds only --real-sample real texts (for the calibration and the encode rate).

Recall@k: share of the k returned entries whose exact similarity reaches the k-th best exact
similarity (ties count: identical keys such as two transitions that differ only in next state give
identical vectors, so the set of "the" top k is not unique); `strict` is plain set overlap.
Queries are held-out keys (never inserted); each is timed --repeat times and its median kept (the
CPUs here are shared); brute force runs on one BLAS thread, as the index queries do. With padded
sizes, real and synthetic query sets are reported apart; the last line (machine-readable) gives the
lowest recall and the highest p99 over them at the default ef:
    recall@8 R at ef E, query p99 T ms, N entries
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")    # brute force on one thread, like the index queries
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from dreamgym.config import CollectConfig, ReplayConfig, load_config  # noqa: E402
from dreamgym.replay.buffer import ReplayBuffer, _dedup_key  # noqa: E402
from dreamgym.replay.embed import build_encoder, key_text  # noqa: E402
from dreamgym.types import Transition, read_trajectories  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, action="append", help="buffer sizes (repeatable; default 10000 and 100000)")
    p.add_argument("--million", action="store_true", help="also run 1,000,000 entries (synthetic keys)")
    p.add_argument("--quick", action="store_true", help="synthetic keys calibrated on a small real sample")
    p.add_argument("--data", type=Path, action="append", help="trajectory JSON lines (default: collect WebShop)")
    p.add_argument("--episodes", type=int, default=0, help="episodes per policy to collect (default 60 quick, 1200 full)")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--queries", type=int, default=0, help="held-out queries (default 200 quick, 1000 full)")
    p.add_argument("--M", type=int, default=ReplayConfig.M)
    p.add_argument("--ef-construction", type=int, default=ReplayConfig.ef_construction)
    p.add_argument("--ef-search", type=int, default=ReplayConfig.ef_search, help="the ef of the last line")
    p.add_argument("--ef-sweep", default="16,32,64,128,256", help="ef values for the table")
    p.add_argument("--threads", type=int, default=1, help="hnswlib insert threads (queries: 1 thread)")
    p.add_argument("--real-sample", type=int, default=32, help="real texts embedded in --quick mode")
    p.add_argument("--real-max", type=int, default=10_000, help="most real keys embedded in full mode")
    p.add_argument("--encoder", default="minilm", help="replay.encoder: minilm, hashing or a model folder")
    p.add_argument("--cache", type=Path, help=".npz file caching real embeddings between runs")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per query (median kept: shared CPUs)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    sizes = sorted(set(a.n or [10_000, 100_000]) | ({1_000_000} if a.million else set()))
    queries = a.queries or (200 if a.quick else 1000)
    rng = np.random.default_rng(a.seed)
    t_start = time.perf_counter()

    texts, transitions, source = _real_keys(a)
    encoder = build_encoder(a.encoder)
    n_real = min(len(texts), a.real_sample if a.quick else a.real_max + queries)
    order = rng.permutation(len(texts))[:n_real]
    texts, transitions = [texts[i] for i in order], [transitions[i] for i in order]
    real, enc_rate = _embed(encoder, texts, a.cache)
    print(f"keys: {len(order)} real phi(s, a) from {source}; {encoder.name} encodes {enc_rate:.1f} texts/s "
          f"(dim {encoder.dim})")
    gen = _SyntheticKeys(real, rng)
    use_real = not a.quick and len(real) > queries
    q_sets = {"synth": gen.sample(queries)}
    if use_real:
        q_sets["real"], real, transitions = real[:queries], real[queries:], transitions[queries:]
    print(f"queries: {queries} held-out keys per set (real: phi(s, a) of transitions never inserted; synth: "
          f"fresh draws of the synthetic generator), k={a.k}; M={a.M} ef_construction={a.ef_construction}; "
          f"insert threads={a.threads}, query threads=1; latency = median of {a.repeat} runs per query")
    print(f"{'entries':>9} {'keys':>22} {'insert/s':>9} {'queries':>7} {'ef':>4} {'recall@k':>8} {'strict':>7} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'brute p50':>9} {'brute p99':>9} {'speedup':>7}")
    last = ""
    for n in sizes:
        n_r = min(len(real), n) if use_real else 0
        vecs = np.concatenate([real[:n_r], gen.sample(n - n_r)]) if n > n_r else real[:n]
        trs = transitions[:n_r] + [_pad_transition(i) for i in range(n - n_r)]
        cfg = ReplayConfig(M=a.M, ef_construction=a.ef_construction, ef_search=a.ef_search, capacity=n,
                           num_threads=a.threads, dedup=False, exact_below=0)
        buf = ReplayBuffer(encoder, cfg, seed=a.seed)
        t0 = time.perf_counter()
        for i in range(0, n, 10_000):
            buf.add(trs[i:i + 10_000], embeddings=vecs[i:i + 10_000])
        insert_rate = n / (time.perf_counter() - t0)
        keys = f"{n_r} real + {n - n_r} synth" if n_r else "synthetic (calibrated)"
        worst = (1.0, 0.0)                                # (recall, p99) at the default ef over query sets
        for q_name, q_vecs in q_sets.items():
            if q_name == "synth" and n_r == n:
                continue                                  # all keys real: synthetic queries would be off-distribution
            truth, brute_ms = _brute_force(vecs, q_vecs, a.k, a.repeat)
            b50, b99 = np.percentile(brute_ms, [50, 99])
            for ef in sorted({int(x) for x in a.ef_sweep.split(",")} | {a.ef_search}):
                buf.ef_search = ef
                rec, strict, ms = _measure(buf, vecs, q_vecs, truth, a.k, a.repeat)
                p50, p99 = np.percentile(ms, [50, 99])
                mark = "*" if ef == a.ef_search else " "
                print(f"{n:>9} {keys:>22} {insert_rate:>9.0f} {q_name:>7} {ef:>3}{mark} {rec:>8.4f} {strict:>7.4f} "
                      f"{p50:>7.3f} {p99:>7.3f} {b50:>9.3f} {b99:>9.3f} {b50 / p50:>6.1f}x")
                if ef == a.ef_search:
                    worst = (min(worst[0], rec), max(worst[1], p99))
        last = f"recall@{a.k} {worst[0]:.4f} at ef {a.ef_search}, query p99 {worst[1]:.3f} ms, {n} entries"
        buf.ef_search = a.ef_search
        for q_name, q_vecs in q_sets.items():
            kinds = ["exclude_trajectory"] + (["source=real"] if 0 < n_r < n else [])
            for kind in kinds if not (q_name == "synth" and n_r == n) else []:
                rec, ms = _measure_filtered(buf, vecs, q_vecs[:200], a.k, a.repeat, kind)
                print(f"{'':>9} {q_name} queries, {kind} at ef {a.ef_search}: recall@{a.k} {rec:.4f}, "
                      f"p50 {np.percentile(ms, 50):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms")
        if n == sizes[0] and hasattr(encoder, "path"):
            e2e = _timed_text_queries(buf, texts[:5], a.k)
            print(f"{'':>9} end-to-end query(state, action) incl. {encoder.name} encode: "
                  f"p50 {np.percentile(e2e, 50):.1f} ms (encoding dominates)")
        del buf
    print(f"total {time.perf_counter() - t_start:.1f}s")
    print(last)
    return 0


# -- data ---------------------------------------------------------------------------------------

def _real_keys(a) -> tuple[list[str], list[Transition], str]:
    """Unique (by content) WebShop transitions and their phi(s, a) texts, from --data or a fresh collect."""
    files = a.data
    if not files:
        from dreamgym.pipelines.collect import collect

        tmp = Path(tempfile.mkdtemp(prefix="replay-bench-"))
        episodes = a.episodes or (60 if a.quick else 1200)
        files = []
        for policy in ("oracle", "random"):
            cfg = load_config(CollectConfig, [], [f"policy={policy}", f"episodes={episodes}", "split=train",
                                                  "progress=false", "shuffle_tasks=true", f"seed={a.seed}"])
            collect(cfg, run_dir=tmp / f"run-{policy}", out=tmp / f"{policy}.jsonl")
            files.append(tmp / f"{policy}.jsonl")
        source = f"{2 * episodes} collected WebShop train episodes (oracle + random)"
    else:
        source = ", ".join(map(str, files))
    seen, texts, trs = set(), [], []
    for f in files:
        for traj in read_trajectories(f):
            if traj.task.split != "train":
                continue
            for t in traj.transitions():
                key = _dedup_key(t)
                if key not in seen:
                    seen.add(key)
                    texts.append(key_text(t.state, t.action))
                    trs.append(t)
    if not texts:
        sys.exit(f"no train transitions in {source}")
    return texts, trs, source


def _embed(encoder, texts: list[str], cache: Path | None) -> tuple[np.ndarray, float]:
    if cache and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if str(z["encoder"]) == encoder.name and list(z["texts"]) == texts:
            return z["vecs"], float(z["rate"])
    t0 = time.perf_counter()
    vecs = encoder.encode(texts)
    rate = len(texts) / (time.perf_counter() - t0)
    if cache:
        np.savez(cache, vecs=vecs, texts=np.array(texts), encoder=encoder.name, rate=rate)
    return vecs, rate


class _SyntheticKeys:
    """Unit vectors shaped like the real sample: cluster centres from the sample's mean + top
    principal directions (low rank), members around them, plus isotropic noise."""

    def __init__(self, real: np.ndarray, rng: np.random.Generator, rank: int = 32, per_cluster: int = 16):
        self.rng, self.per_cluster, self.dim = rng, per_cluster, real.shape[1]
        self.mean = real.mean(axis=0)
        centered = real - self.mean
        _, s, vt = np.linalg.svd(centered, full_matrices=False)
        r = max(1, min(rank, len(real) - 1))
        spectrum = s[:r] / np.sqrt(max(len(real) - 1, 1))
        if len(spectrum) < rank:                         # small sample: extend the decay with random directions
            extra = rng.normal(size=(rank - len(spectrum), self.dim))
            vt = np.concatenate([vt[:r], extra / np.linalg.norm(extra, axis=1, keepdims=True)])
            spectrum = np.concatenate([spectrum, spectrum[-1] * 0.9 ** np.arange(1, rank - len(spectrum) + 1)])
        self.basis, self.spectrum = vt[:rank], spectrum
        resid = centered - (centered @ vt[:r].T) @ vt[:r]
        self.noise = max(float(resid.std()), 0.1 * float(spectrum[-1]) / np.sqrt(self.dim), 1e-3)

    def sample(self, n: int) -> np.ndarray:
        if n <= 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        n_c = max(1, n // self.per_cluster)
        centers = self.mean + (self.rng.normal(size=(n_c, len(self.spectrum))) * self.spectrum) @ self.basis
        which = self.rng.integers(0, n_c, size=n)
        x = centers[which] + 0.35 * (self.rng.normal(size=(n, len(self.spectrum))) * self.spectrum) @ self.basis
        x += self.noise * self.rng.normal(size=x.shape)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _pad_transition(i: int) -> Transition:
    return Transition(trajectory_id=f"synthetic-key-{i // 10}", step=i % 10, env="webshop", source="synthetic",
                      task_id="bench", instruction="", state=f"synthetic key {i}", action="", next_state="",
                      reward=0.0, done=False)


# -- measurements -----------------------------------------------------------------------------

def _brute_force(vecs: np.ndarray, queries: np.ndarray, k: int, repeat: int) -> tuple[list, np.ndarray]:
    truth, ms = [], []
    for q in queries:
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            sims = vecs @ q
            top = np.argpartition(-sims, k)[:k]
            runs.append(1e3 * (time.perf_counter() - t0))
        ms.append(float(np.median(runs)))
        top = top[np.argsort(-sims[top])]
        truth.append((set(top.tolist()), float(sims[top[-1]])))
    return truth, np.array(ms)


def _measure(buf: ReplayBuffer, vecs: np.ndarray, queries: np.ndarray, truth: list, k: int, repeat: int):
    row_of = {id(t): i for i, t in enumerate(buf.transitions())}   # buffer order == insertion order
    hits_ok = strict_ok = 0
    ms = []
    for q, (top, kth) in zip(queries, truth):
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            hits = buf.search_vectors(q[None], k)[0]
            runs.append(1e3 * (time.perf_counter() - t0))
        ms.append(float(np.median(runs)))
        rows = [row_of[id(h.transition)] for h in hits]
        hits_ok += sum(float(vecs[r] @ q) >= kth - 1e-5 for r in rows)
        strict_ok += len(top & set(rows))
    return hits_ok / (k * len(queries)), strict_ok / (k * len(queries)), np.array(ms)


def _measure_filtered(buf: ReplayBuffer, vecs: np.ndarray, queries: np.ndarray, k: int, repeat: int, kind: str):
    """Recall and latency of filtered queries: `exclude_trajectory` drops the trajectory of the
    query's nearest neighbour (a transition asking about itself); `source=real` keeps real keys only."""
    trs = buf.transitions()
    row_of = {id(t): i for i, t in enumerate(trs)}
    traj = np.array([t.trajectory_id for t in trs])
    real = np.array([t.source == "real" for t in trs])
    ok, ms = 0, []
    for q in queries:
        sims = vecs @ q
        if kind == "exclude_trajectory":
            excl = str(traj[int(np.argmax(sims))])
            allowed, kw = np.flatnonzero(traj != excl), {"exclude_trajectories": [excl]}
        else:
            allowed, kw = np.flatnonzero(real), {"source": "real"}
        kth = float(np.sort(sims[allowed])[-k])
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            hits = buf.search_vectors(q[None], k, **kw)[0]
            runs.append(1e3 * (time.perf_counter() - t0))
        ms.append(float(np.median(runs)))
        ok += sum(float(sims[row_of[id(h.transition)]]) >= kth - 1e-5 for h in hits)
    return ok / (k * len(queries)), np.array(ms)


def _timed_text_queries(buf: ReplayBuffer, texts: list[str], k: int) -> np.ndarray:
    ms = []
    for text in texts:
        action, state = text.split("\n", 1)
        t0 = time.perf_counter()
        buf.query(state.removeprefix("State: "), action.removeprefix("Action: "), k)
        ms.append(1e3 * (time.perf_counter() - t0))
    return np.array(ms)


if __name__ == "__main__":
    sys.exit(main())
