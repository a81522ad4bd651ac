"""`--env alfworld-http`: the registered name builds the ALFWorld flavour of the HTTP client from `env.http.*`,
runs `collect` against an AgentGym-shaped ALFWorld server (the small fake of tests/test_http_env.py; the
real server needs ALFWorld's game files), and fails clearly, naming the URL, when no server answers."""

import json
import socket
import threading
from http.server import ThreadingHTTPServer

import pytest

from dreamgym.config import CollectConfig, EnvConfig
from dreamgym.envs.alfworld import AlfWorldHttpEnv
from dreamgym.envs.base import make_env, registered_envs
from dreamgym.envs.http_client import EnvServerError
from dreamgym.pipelines.collect import collect
from tests.test_http_env import _FakeAlfworld


@pytest.fixture()
def server_url():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FakeAlfworld)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _cfg(url: str) -> EnvConfig:
    cfg = EnvConfig(name="alfworld-http")
    cfg.http.url, cfg.http.num_tasks, cfg.http.test_goals, cfg.http.dev_goals = url, 3, 2, 0
    cfg.http.retries, cfg.http.timeout_s = 1, 5.0
    cfg.http.flavour = "webshop"  # ignored: the alfworld env always speaks the ALFWorld flavour
    return cfg


def test_alfworld_resolves_to_the_alfworld_http_client(server_url, tmp_path):
    assert "alfworld-http" in registered_envs()
    env = make_env(_cfg(server_url))
    assert isinstance(env, AlfWorldHttpEnv) and (env.flavour, env.env_name) == ("alfworld", "alfworld")
    assert [(t.id, t.env, t.instruction) for t in env.tasks("test")] == [
        ("alfworld:0", "alfworld", "put a mug in cabinet 0."), ("alfworld:1", "alfworld", "put a mug in cabinet 1.")]
    cfg = CollectConfig(env=_cfg(server_url), policy="random", episodes=2, split="test", progress=False)
    summary = collect(cfg, run_dir=tmp_path / "run")
    assert (summary["env"], summary["episodes"], summary["success_rate"]) == ("alfworld-http", 2, 1.0)
    rows = [json.loads(line) for line in open(summary["trajectories"])]
    assert rows[0]["steps"][0]["available_actions"] == ["look", "go to cabinet 1"]


def test_no_server_fails_naming_the_url_and_the_key():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    env = make_env(_cfg(f"http://127.0.0.1:{port}"))
    with pytest.raises(EnvServerError, match=rf"127\.0\.0\.1:{port}.*AgentGym ALFWorld server.*env\.http\.url"):
        env.tasks("test")
