"""Real WebShop env steps per second: native vs over AgentGym's HTTP protocol on loopback.

The same scripted episodes (N oracle + N random, test split, 15 turns max) run three ways: the native
`WebShopEnv` in-process; `HttpEnv` against `EnvServer` in a thread of this process (client and server
share one GIL); `HttpEnv` against `dreamgym serve-env` in a subprocess (the deployment shape). Steps/s =
env steps / wall clock of the whole episode loop (reset, available actions and policy included, the same
work in every mode). Over HTTP each step costs two requests (/step and /available_actions).

    python benchmarks/env_steps.py                 # 100 + 100 episodes per mode, well under a minute
    python benchmarks/env_steps.py --episodes 20 --no-subprocess
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dreamgym.config import EnvConfig, ServeEnvConfig
from dreamgym.envs.http_client import EnvServerError, HttpEnv
from dreamgym.envs.http_server import build_server
from dreamgym.episodes import run_episode
from dreamgym.policies import RandomPolicy

__all__ = ["main", "run_mode"]


def run_mode(env, native, episodes: int, max_turns: int) -> tuple[int, int, float]:
    """`episodes` oracle + `episodes` random episodes on the test split -> (episodes, steps, seconds)."""
    tasks = native.tasks("test")
    steps, t0 = 0, time.perf_counter()
    for policy in (native.oracle(), RandomPolicy(seed=0)):
        for ep in range(episodes):
            steps += len(run_episode(env, policy, tasks[ep % len(tasks)], max_turns, episode=ep).steps)
    return 2 * episodes, steps, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=100, help="episodes per policy (oracle and random)")
    ap.add_argument("--max-turns", type=int, default=15)
    ap.add_argument("--no-subprocess", action="store_true", help="skip the `dreamgym serve-env` subprocess row")
    args = ap.parse_args(argv)
    console = Console()
    server = build_server(ServeEnvConfig(env=EnvConfig(name="webshop"), port=0)).start("127.0.0.1", 0)
    native = server.template
    rows = []
    try:
        rows.append(("native", *run_mode(native, native, args.episodes, args.max_turns)))
        client = HttpEnv(server.url, timeout_s=30, retries=2)
        rows.append(("http, server thread", *run_mode(client, native, args.episodes, args.max_turns)))
        client.close()
        if not args.no_subprocess:
            with _subprocess_server() as url:
                client = HttpEnv(url, timeout_s=30, retries=2)
                rows.append(("http, serve-env process", *run_mode(client, native, args.episodes, args.max_turns)))
                client.close()
    finally:
        server.shutdown()
    base = rows[0][2] / rows[0][3]
    table = Table(title=f"WebShop env steps/s — {_machine()}")
    for col in ("mode", "episodes", "steps", "steps/s", "ratio vs native"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    out = []
    for mode, eps, steps, secs in rows:
        rate = steps / secs
        table.add_row(mode, str(eps), str(steps), f"{rate:,.0f}", f"{rate / base:.2f}")
        out.append({"mode": mode, "episodes": eps, "steps": steps, "steps_per_s": rate, "ratio": rate / base})
    console.print(table)
    return out


# -- internals ---------------------------------------------------------------------------------

class _subprocess_server:
    """`dreamgym serve-env webshop` on a free port in a subprocess, up until the block ends."""

    def __enter__(self) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self._tmp = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen([sys.executable, "-m", "dreamgym.cli", "serve-env", "webshop", "--port",
                                      str(port), "--run-dir", str(Path(self._tmp.name) / "run")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        probe = HttpEnv(url, timeout_s=2, retries=1)
        while True:
            try:
                probe._transport.request("GET", "/")
                probe.close()
                return url
            except EnvServerError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("dreamgym serve-env did not come up") from None
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._tmp.cleanup()


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


if __name__ == "__main__":
    main()
