"""AgentGym HTTP protocol: our server (envs/http_server.py) and client (envs/http_client.py).

The WebShop-flavour tests serve the native WebShop env in-process on 127.0.0.1:<ephemeral> and check
that episodes driven over HTTP are step-for-step identical to the native env's; then error shapes,
independence of concurrent envs, a dead/hanging server, and the `dreamgym serve-env` CLI end to end.
The ALFWorld flavour is checked against a tiny fake server (no ALFWorld server exists here)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dreamgym.config import EnvConfig, ServeEnvConfig, WebShopConfig
from dreamgym.envs.http_client import EnvServerError, HttpEnv
from dreamgym.envs.http_server import EnvServer, env_spawner, serve
from dreamgym.episodes import run_episode
from dreamgym.policies import RandomPolicy
from dreamgym.types import StepResult, Task

SPLIT = {"test_goals": 12, "dev_goals": 8}  # small splits: tasks() fetches every instruction


@pytest.fixture(scope="module")
def server():
    cfg = ServeEnvConfig(env=EnvConfig(name="webshop", webshop=WebShopConfig(**SPLIT)), host="127.0.0.1", port=0)
    with serve(cfg) as s:
        yield s


@pytest.fixture(scope="module")
def native(server):
    return server.template  # built by make_env(cfg.env); the server never hands it out


def _client(server: EnvServer, **kw) -> HttpEnv:
    return HttpEnv(server.url, timeout_s=5.0, retries=2, backoff_s=0.01, **SPLIT, **kw)


def _view(traj) -> tuple:
    """Everything an episode shows except `info` (empty over HTTP, by protocol)."""
    return ([(s.t, s.observation, s.available_actions, s.action, s.reward, s.done) for s in traj.steps],
            traj.final_observation, traj.final_reward, traj.success)


def _raw(server: EnvServer, method: str, path: str, body: bytes | None = None) -> tuple[int, object]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- (a) same episodes natively and over HTTP --------------------------------------------------

@pytest.mark.parametrize("policy", ["oracle", "random"])
def test_http_episodes_identical_to_native(server, native, policy):
    client = _client(server)
    tasks = native.tasks("test")[:10]
    make = (lambda: native.oracle()) if policy == "oracle" else (lambda: RandomPolicy(seed=7))
    observations, rewards = set(), []
    for ep, task in enumerate(tasks):
        a = run_episode(native, make(), task, max_turns=15, seed=7, episode=ep)
        b = run_episode(client, make(), task, max_turns=15, seed=7, episode=ep)
        assert _view(b) == _view(a), f"{policy} episode on {task.id} differs over HTTP"
        assert b.id == a.id and b.task == a.task and len(a.steps) >= 2
        observations |= {s.observation for s in a.steps}
        rewards.append(a.final_reward)
    client.close()
    assert len(observations) >= 30  # many distinct pages were compared, not one screen
    if policy == "random":
        assert any(0 < r for r in rewards)  # purchases with partial credit came through HTTP intact


def test_http_tasks_match_native_splits(server, native):
    client = _client(server)
    for split in ("test", "dev"):
        got, want = client.tasks(split), native.tasks(split)
        assert [(t.id, t.instruction, t.split, t.env) for t in got] == \
               [(t.id, t.instruction, t.split, t.env) for t in want]
    assert client._split_ids("train") == [int(t.id.split(":")[1]) for t in native.tasks("train")]
    assert client.oracle() is None
    live = _raw(server, "GET", "/list_envs")[1]
    assert client._env_id not in live or client._env_id is None  # probes were closed
    client.close()


def test_extra_views_match_native(server, native):
    client = _client(server)
    task = native.tasks("dev")[0]
    assert client.reset(task) == StepResult(native.reset(task).observation, 0.0, False, {"task_id": task.id})
    for act in ("search[red shoes]", "click[next >]"):
        native.step(act), client.step(act)
    assert client.observation == native.observation
    assert client.instruction_text == native.instruction_text == task.instruction
    assert client.state() == native.state()
    assert client.page_actions() == native.page_actions()
    client.close()


# -- (b) error shapes: HTTP 200 + {"error": ...} -----------------------------------------------

@pytest.mark.parametrize("method,path,body", [
    ("POST", "/step", b'{"env_idx": 99999, "action": "click[x]"}'),   # unknown env
    ("GET", "/observation?env_idx=99999", None),
    ("GET", "/available_actions?env_idx=abc", None),                    # not an int
    ("POST", "/step", b'{"env_idx": 0, "action": '),                   # malformed JSON
    ("POST", "/step", b'[1, 2]'),                                       # not an object
    ("POST", "/reset", b'{}'),                                          # missing env_idx
    ("GET", "/nope", None),                                             # unknown route
    ("POST", "/nope", b'{}'),
    ("GET", "/step", None),                                             # wrong method
    ("POST", "/close", b'{"env_idx": 99999}'),
])
def test_bad_requests_answer_200_error(server, method, path, body):
    status, ans = _raw(server, method, path, body)
    assert status == 200 and isinstance(ans, dict) and isinstance(ans.get("error"), str) and ans["error"]


def test_episode_errors_and_lifecycle(server, native):
    status, idx = _raw(server, "POST", "/create")
    assert status == 200 and isinstance(idx, int) and idx in _raw(server, "GET", "/list_envs")[1]
    step = json.dumps({"env_idx": idx, "action": "search[x]"}).encode()
    assert "error" in _raw(server, "POST", "/step", step)[1]  # step before reset
    assert "error" in _raw(server, "POST", "/step", json.dumps({"env_idx": idx}).encode())[1]  # no action
    bad_goal = json.dumps({"env_idx": idx, "session_id": 10 ** 9}).encode()
    assert "error" in _raw(server, "POST", "/reset", bad_goal)[1]
    obs, none = _raw(server, "POST", "/reset", json.dumps({"env_idx": idx}).encode())[1]  # random goal
    assert isinstance(obs, str) and "Instruction" in obs and none is None
    client = _client(server)
    with pytest.raises(EnvServerError, match=r"/reset answered an error"):
        client.reset(Task(id="webshop:1000000000", instruction="", env="webshop", split="test"))
    task = native.tasks("test")[0]
    client.reset(task)
    oracle = native.oracle()
    oracle.reset(task)
    result = None
    for _ in range(15):
        result = client.step(oracle.act(client.observation, client.available_actions()))
        if result.done:
            break
    assert result.done and result.info == {}
    after = json.dumps({"env_idx": client._env_id, "action": "click[buy now]"}).encode()
    assert "episode is over" in _raw(server, "POST", "/step", after)[1]["error"]  # step after done
    with pytest.raises(EnvServerError, match="episode is over"):
        client.step("click[buy now]")
    client.close()
    assert _raw(server, "POST", "/close", json.dumps({"env_idx": idx}).encode())[1] == {"env_idx": idx, "closed": True}
    assert idx not in _raw(server, "GET", "/list_envs")[1]
    hello = _raw(server, "GET", "/")[1]
    assert hello["env"] == "webshop" and hello["num_goals"] == len(native.catalog.goals)


# -- (c) concurrent envs are independent -------------------------------------------------------

def test_interleaved_and_threaded_envs_are_independent(server, native):
    tasks = native.tasks("test")[2:6]
    want = [_view(run_episode(native, RandomPolicy(seed=1), t, max_turns=10, seed=1)) for t in tasks]
    a, b = _client(server), _client(server)  # two env_idx stepped alternately
    pa, pb = RandomPolicy(seed=1), RandomPolicy(seed=1)
    oa, ob = a.reset(tasks[0]).observation, b.reset(tasks[1]).observation
    pa.reset(tasks[0]), pb.reset(tasks[1])
    seen_a, seen_b = [], []
    for _ in range(10):
        for env, pol, obs, seen in ((a, pa, oa, seen_a), (b, pb, ob, seen_b)):
            if seen and seen[-1][-1]:
                continue
            acts = env.available_actions()
            act = pol.act(obs, acts)
            r = env.step(act)
            seen.append((obs, acts, act, r.reward, r.done))
            if env is a:
                oa = r.observation
            else:
                ob = r.observation
    for seen, w in ((seen_a, want[0]), (seen_b, want[1])):
        assert [(o, acts, act, rew, d) for _, o, acts, act, rew, d in w[0]] == seen
    a.close(), b.close()
    results: dict[int, tuple] = {}

    def worker(k: int) -> None:
        env = _client(server)
        results[k] = _view(run_episode(env, RandomPolicy(seed=1), tasks[k], max_turns=10, seed=1))
        env.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(tasks))]
    [t.start() for t in threads]
    [t.join(timeout=60) for t in threads]
    assert [results.get(k) for k in range(len(tasks))] == want


# -- a generic (non-WebShop) env behind the server ---------------------------------------------

class _CountEnv:
    """Counts up from the goal index; `step('boom')` raises like a buggy env."""

    def __init__(self) -> None:
        self.n, self.task = 0, None

    def spawn(self) -> "_CountEnv":
        return _CountEnv()

    def task_by_index(self, i: int) -> Task:
        if not 0 <= i < 4:
            raise IndexError(f"goal {i} out of range")
        return Task(id=f"count:{i}", instruction=f"count from {i} to 5", env="count", split="test", goal={"index": i})

    def tasks(self, split: str) -> list[Task]:
        return [self.task_by_index(i) for i in range(4)] if split == "test" else []

    def reset(self, task: Task) -> StepResult:
        self.n, self.task = task.goal["index"], task
        return StepResult(f"at {self.n}")

    def step(self, action: str) -> StepResult:
        if action == "boom":
            raise RuntimeError("kaboom")
        self.n += 1
        return StepResult(f"at {self.n}", float(self.n >= 5), self.n >= 5, {})

    def available_actions(self) -> list[str]:
        return ["search[...]", "click[up]"]

    def close(self) -> None:
        pass


def test_generic_env_exceptions_cap_and_actions():
    with EnvServer(_CountEnv(), name="count", max_envs=2).start("127.0.0.1", 0) as srv:
        env = HttpEnv(srv.url, env_name="count", timeout_s=5, retries=1, test_goals=4, dev_goals=0,
                      fetch_workers=1)
        assert [t.instruction for t in env.tasks("test")] == [f"count from {i} to 5" for i in range(4)]
        assert env.reset(env.tasks("test")[3]).observation == "at 3"
        assert env.page_actions() == {"has_search_bar": True, "clickables": ["up"]}
        assert env.available_actions() == ["search[...]", "click[up]"]
        with pytest.raises(EnvServerError, match="RuntimeError: kaboom"):
            env.step("boom")
        assert env.step("click[up]") == StepResult("at 4", 0.0, False, {})  # still serving, state intact
        assert env.step("click[up]") == StepResult("at 5", 1.0, True, {})
        other = HttpEnv(srv.url, timeout_s=5, retries=1)
        other.reset(Task(id="count:0", instruction="", env="count", split="test"))
        third = HttpEnv(srv.url, timeout_s=5, retries=1)
        with pytest.raises(EnvServerError, match="max_envs=2"):
            third.reset(Task(id="count:0", instruction="", env="count", split="test"))
        assert srv.stats()["envs_live"] == 2 and srv.stats()["errors"] >= 2
        env.close(), other.close()
    with pytest.raises(TypeError, match="no spawn"):
        env_spawner(object())


def test_client_reconnects_after_a_server_restart_on_the_same_port():
    first = EnvServer(_CountEnv()).start("127.0.0.1", 0)
    env = HttpEnv(first.url, timeout_s=5, retries=1)  # one attempt: a dropped keep-alive is not a failure
    env.reset(Task(id="count:1", instruction="", env="count", split="test"))
    port = first.port
    first.shutdown()  # also hangs up on the client's idle keep-alive connection
    with EnvServer(_CountEnv(), name="count2").start("127.0.0.1", port):
        assert env._transport.request("GET", "/")["env"] == "count2"  # reconnected within one attempt
        with pytest.raises(EnvServerError, match="unknown env_idx 0"):  # its env died with the old server
            env.reset(Task(id="count:2", instruction="", env="count", split="test"))


# -- (d) a dead or silent server fails fast with the URL ---------------------------------------

def test_dead_server_raises_within_bound():
    port = _free_port()  # nothing listens there any more
    env = HttpEnv(f"http://127.0.0.1:{port}", timeout_s=0.2, retries=3, backoff_s=0.01)
    t0 = time.perf_counter()
    with pytest.raises(EnvServerError, match=rf"http://127.0.0.1:{port}/create.*after 3 attempt"):
        env.reset(Task(id="webshop:0", instruction="", env="webshop", split="test"))
    assert time.perf_counter() - t0 < 3 * 0.2 + 0.07 + 1.0


def test_silent_server_times_out():
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        env = HttpEnv(f"http://127.0.0.1:{s.getsockname()[1]}", timeout_s=0.1, retries=2, backoff_s=0.01)
        t0 = time.perf_counter()
        with pytest.raises(EnvServerError, match="timed out|Timeout"):
            env.reset(Task(id="webshop:0", instruction="", env="webshop", split="test"))
        assert time.perf_counter() - t0 < 2 * 0.1 + 0.01 + 1.0


# -- (e) the CLI end to end --------------------------------------------------------------------

def test_serve_env_cli_end_to_end(tmp_path):
    port, run_dir = _free_port(), tmp_path / "run"
    exe = Path(sys.executable).with_name("dreamgym")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "dreamgym.cli"]
    proc = subprocess.Popen(cmd + ["serve-env", "webshop", "--port", str(port), "--run-dir", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        env = HttpEnv(f"http://127.0.0.1:{port}", timeout_s=2, retries=1)
        deadline = time.monotonic() + 120
        while True:  # poll GET / until the server is up
            assert proc.poll() is None, proc.communicate()[1]
            try:
                hello = env._transport.request("GET", "/")
                break
            except EnvServerError:
                assert time.monotonic() < deadline, "serve-env did not come up within 120 s"
                time.sleep(0.2)
        assert hello["env"] == "webshop"
        obs = env.reset(Task(id="webshop:3", instruction="", env="webshop", split="test")).observation
        assert "Instruction" in obs and "search[...]" in env.available_actions()
        assert env.step("search[cotton t-shirt]").done is False
        env.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"serving webshop on http://127.0.0.1:{port}" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["command"] == "serve-env" and summary["port"] == port
    assert summary["requests"] >= 5 and summary["envs_created"] == 1


# -- the ALFWorld flavour, against a tiny fake of AgentGym's ALFWorld server -------------------

class _FakeAlfworld(BaseHTTPRequestHandler):
    """Answers AgentGym ALFWorld shapes: /create {"id"}, /reset, /step; action 'bad' -> error."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/create":
            ans: object = {"id": 7}
        elif self.path == "/reset":
            ans = {"id": body["id"], "observation": f"You are in a room.\nYour task is to: put a mug in "
                   f"cabinet {body['game']}.", "available_actions": ["look", "go to cabinet 1"],
                   "task_type": "pick_and_place"}
        elif self.path == "/step" and body["action"] == "bad":
            ans = {"error": "unknown action"}
        elif self.path == "/step":
            ans = {"observation": f"You {body['action']}.", "reward": 1.0, "done": True,
                   "available_actions": ["look"]}
        else:
            ans = {"error": "unknown route"}
        data = json.dumps(ans).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_alfworld_flavour_client():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FakeAlfworld)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        env = HttpEnv(f"http://127.0.0.1:{httpd.server_address[1]}", flavour="alfworld", env_name="alfworld",
                      timeout_s=5, retries=1, num_tasks=5, test_goals=2, dev_goals=1)
        tasks = env.tasks("train")
        assert [(t.id, t.instruction) for t in tasks] == [("alfworld:3", "put a mug in cabinet 3."),
                                                          ("alfworld:4", "put a mug in cabinet 4.")]
        first = env.reset(tasks[0])
        assert first.observation.endswith("cabinet 3.") and first.info["task_type"] == "pick_and_place"
        assert env.available_actions() == ["look", "go to cabinet 1"]
        with pytest.raises(EnvServerError, match="unknown action"):
            env.step("bad")
        assert env.step("look") == StepResult("You look.", 1.0, True, {})
        assert env.available_actions() == ["look"]
        env.close()  # the fake has no /close: best effort, no raise
        with pytest.raises(EnvServerError, match="bare int"):
            HttpEnv(env.url, timeout_s=5, retries=1).reset(tasks[0])  # webshop flavour at an ALFWorld server
    finally:
        httpd.shutdown()
        httpd.server_close()
