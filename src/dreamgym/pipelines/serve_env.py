"""`dreamgym serve-env`: serve a native env (WebShop by default) over AgentGym's HTTP protocol
(envs/http_server.py) until Ctrl-C or SIGTERM, then write summary.json (requests served, errors, envs
created, bound URL, wall clock). Prints `serving <env> on http://host:port` to stderr once the socket is
bound (with `port=0`, the port the OS chose), so scripts can wait for that line or poll `GET /`."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

from dreamgym.config import ServeEnvConfig
from dreamgym.envs.http_server import build_server
from dreamgym.runs import RunDir

__all__ = ["serve_env"]


def serve_env(cfg: ServeEnvConfig, run_dir: str | Path | None = None, stop: threading.Event | None = None) -> dict:
    """Serve until KeyboardInterrupt, SIGTERM or `stop` is set (tests); -> the summary dict."""
    run = RunDir.open("serve-env", run_dir, cfg)
    stop = stop or threading.Event()
    with run.phase("setup"):
        server = build_server(cfg).start(cfg.host, cfg.port)
    print(f"serving {cfg.env.name} on {server.url} (max_envs {cfg.max_envs}, {server.num_goals} goals); "
          f"run dir: {run.path}", file=sys.stderr, flush=True)
    previous = _on_sigterm(lambda *_: stop.set())
    try:
        with run.phase("serve"):
            while not stop.wait(0.2):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        _restore_sigterm(previous)
        url = server.url
        server.shutdown()
    stats = server.stats()
    print(f"stopped: {stats['requests']} requests, {stats['envs_created']} envs created", file=sys.stderr,
          flush=True)
    return run.write_summary(env=cfg.env.name, url=url, host=cfg.host, port=int(url.rsplit(":", 1)[-1]),
                             max_envs=cfg.max_envs, num_goals=server.num_goals, **stats)


# -- internals ---------------------------------------------------------------------------------

def _on_sigterm(handler: Any) -> Any:
    """Install a SIGTERM handler (main thread only; elsewhere, e.g. in tests, leave signals alone)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)
