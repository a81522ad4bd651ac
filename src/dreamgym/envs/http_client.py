"""`HttpEnv`: the dreamgym Env protocol over AgentGym's HTTP env servers (`env.name=http`, config
`env.http.*`), in both flavours of docs/contracts "AgentGym HTTP shapes":

* `webshop` — `POST /create` -> bare int env_idx (sent on first use); `reset(task)` posts
  `{"env_idx", "session_id": <goal index>}` (the task's `goal["index"]`, else the int after ':' in its
  id); `step` maps `{"state", "reward", "done", "info"}` to a StepResult; `available_actions()` turns
  `{"has_search_bar", "clickables"}` into the native env's list (`search[...]` first, then `click[x]`
  for every clickable except `search`). Served by `dreamgym serve-env` or AgentGym's WebShop server.
* `alfworld` — `/create` -> `{"id"}`, `/reset {"id", "game", "world_type": "Text"}`, `/step {"id",
  "action"}`; tasks are game indices; available actions come with each answer.

Over HTTP `info` is `{}` (the protocol answers `"info": null`; reset adds `task_id` as the native env
does), so `invalid_action` flags are not visible. `oracle()` is None: the goal record is not exposed.
Stepping after `done` is an error answer (raised), where the native env answers an invalid action.

Tasks: split s covers session ids test [0, test_goals), dev [test_goals, +dev_goals), train [.., N) with
N = `num_tasks`, or the `num_goals` our server reports at `GET /` (an AgentGym server does not: set
`env.http.num_tasks`). Instructions are fetched once per split and cached, by `reset` +
`/instruction_text` (ALFWorld: the "Your task is to: ..." line of the reset observation) on a bounded
pool of extra server envs (`fetch_workers`), which are closed afterwards.

Robustness: every request has a timeout (`timeout_s`); connection errors, timeouts and non-200 answers
are re-sent up to `retries` attempts with exponential backoff (`backoff_s * 2**i`; POSTs are re-sent too,
as upstream's client does); then, or on an `{"error": ...}` answer, `EnvServerError` names the URL and
route. One persistent (keep-alive) connection per HttpEnv; use one HttpEnv per thread.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any
from urllib.parse import urlencode, urlsplit

from dreamgym.config import SPLITS
from dreamgym.envs.base import Env
from dreamgym.errors import DreamGymError
from dreamgym.types import StepResult, Task

__all__ = ["HttpEnv", "EnvServerError"]

_TASK_LINE = re.compile(r"Your task is to:\s*(.+)")


class EnvServerError(DreamGymError):
    """The env server is unreachable, answered an error, or answered something off-protocol."""


class HttpEnv(Env):
    """One env instance on a remote AgentGym-protocol server. Build with `HttpEnv.from_config(env_cfg)`."""

    name = "http"

    def __init__(self, url: str = "http://127.0.0.1:36001", flavour: str = "webshop", env_name: str = "webshop",
                 timeout_s: float = 10.0, retries: int = 5, backoff_s: float = 0.2, num_tasks: int | None = None,
                 test_goals: int = 500, dev_goals: int = 1000, fetch_workers: int = 8):
        if flavour not in ("webshop", "alfworld"):
            raise DreamGymError(f"key 'env.http.flavour': got {flavour!r}, expected 'webshop' or 'alfworld'")
        self.url, self.flavour, self.env_name = url.rstrip("/"), flavour, env_name
        self.num_tasks, self.split_sizes, self.fetch_workers = num_tasks, (test_goals, dev_goals), fetch_workers
        self._transport = _Transport(self.url, timeout_s, retries, backoff_s)
        self._env_id: int | None = None
        self._task: Task | None = None
        self._actions: list[str] | None = None  # cache, valid until the next reset/step
        self._tasks: dict[str, list[Task]] = {}

    @classmethod
    def from_config(cls, env_cfg: Any) -> "HttpEnv":
        c = env_cfg.http
        return cls(**{f.name: getattr(c, f.name) for f in fields(c)})

    # -- Env protocol ---------------------------------------------------------------------------
    def tasks(self, split: str) -> list[Task]:
        if split not in SPLITS:
            raise DreamGymError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        if split not in self._tasks:
            ids = self._split_ids(split)
            texts = self._fetch_instructions(ids)
            self._tasks[split] = [Task(id=f"{self.env_name}:{i}", instruction=t, env=self.env_name, split=split,
                                       goal={"index": i}) for i, t in zip(ids, texts)]
        return list(self._tasks[split])

    def reset(self, task: Task) -> StepResult:
        index = _goal_index(task)
        self._create()
        self._actions = None
        if self.flavour == "webshop":
            ans = self._post("/reset", {"env_idx": self._env_id, "session_id": index})
            if not (isinstance(ans, list) and ans and isinstance(ans[0], str)):
                raise self._off_protocol("/reset", "[observation, null]", ans)
            observation = ans[0]
            info: dict = {"task_id": task.id}
        else:
            ans = self._post("/reset", {"id": self._env_id, "game": index, "world_type": "Text"})
            observation = self._field("/reset", ans, "observation", str)
            self._actions = [str(a) for a in self._field("/reset", ans, "available_actions", list)]
            info = {"task_id": task.id, "task_type": ans.get("task_type")}
        self._task = task
        return StepResult(observation, 0.0, False, info)

    def step(self, action: str) -> StepResult:
        if self._task is None:
            raise RuntimeError("call reset(task) before step()")
        self._actions = None
        if self.flavour == "webshop":
            ans = self._post("/step", {"env_idx": self._env_id, "action": action})
            state = self._field("/step", ans, "state", str)
            info = ans.get("info")
            return StepResult(state, float(self._field("/step", ans, "reward", (int, float))),
                              bool(self._field("/step", ans, "done", (bool, int))),
                              dict(info) if isinstance(info, dict) else {})
        ans = self._post("/step", {"id": self._env_id, "action": action})
        self._actions = [str(a) for a in ans.get("available_actions") or []]
        return StepResult(self._field("/step", ans, "observation", str),
                          float(self._field("/step", ans, "reward", (int, float))),
                          bool(self._field("/step", ans, "done", (bool, int))), {})

    def available_actions(self) -> list[str]:
        if self._actions is None:
            if self.flavour == "alfworld" or self._env_id is None:
                return []
            d = self.page_actions()
            acts = ["search[...]"] if d["has_search_bar"] else []
            self._actions = acts + [f"click[{c}]" for c in d["clickables"] if c != "search"]
        return list(self._actions)

    def close(self) -> None:
        """Post /close once (best effort: an old server may not know it) and drop the connection."""
        if self._env_id is not None:
            key = "env_idx" if self.flavour == "webshop" else "id"
            try:
                self._transport.request("POST", "/close", {key: self._env_id}, attempts=1)
            except EnvServerError:
                pass
        self._env_id, self._task, self._actions = None, None, None
        self._transport.close()

    def oracle(self) -> None:
        """None: the protocol does not expose the goal record a scripted oracle needs."""
        return None

    # -- upstream's extra views (WebShop flavour) ------------------------------------------------
    def page_actions(self) -> dict:
        """`GET /available_actions`: {'has_search_bar': bool, 'clickables': [str]}."""
        ans = self._get("/available_actions")
        if not (isinstance(ans, dict) and isinstance(ans.get("clickables"), list)):
            raise self._off_protocol("/available_actions", '{"has_search_bar", "clickables"}', ans)
        return {"has_search_bar": bool(ans.get("has_search_bar")), "clickables": [str(c) for c in ans["clickables"]]}

    @property
    def observation(self) -> str:
        return str(self._get("/observation"))

    @property
    def instruction_text(self) -> str:
        return str(self._get("/instruction_text"))

    def state(self) -> dict:
        return dict(self._get("/state"))

    def __repr__(self) -> str:
        return f"HttpEnv({self.url!r}, flavour={self.flavour!r}, env_idx={self._env_id})"

    # -- internals ------------------------------------------------------------------------------
    def _create(self) -> None:
        if self._env_id is not None:
            return
        ans = self._post("/create", None)
        if self.flavour == "webshop":
            if isinstance(ans, bool) or not isinstance(ans, int):
                hint = " (an ALFWorld-flavour server? set env.http.flavour=alfworld)" if isinstance(ans, dict) else ""
                raise self._off_protocol("/create", "a bare int env_idx", ans, hint)
            self._env_id = ans
        else:
            self._env_id = self._field("/create", ans, "id", int)

    def _post(self, route: str, payload: Any) -> Any:
        return self._checked(route, self._transport.request("POST", route, payload))

    def _get(self, route: str) -> Any:
        if self._env_id is None:
            self._create()
        return self._checked(route, self._transport.request("GET", route, query={"env_idx": self._env_id}))

    def _checked(self, route: str, ans: Any) -> Any:
        if isinstance(ans, dict) and "error" in ans:
            raise EnvServerError(f"env server {self.url}{route} answered an error: {ans['error']}")
        return ans

    def _field(self, route: str, ans: Any, key: str, kind: type | tuple[type, ...]) -> Any:
        if not isinstance(ans, dict) or not isinstance(ans.get(key), kind):
            raise self._off_protocol(route, f"a JSON object with {key!r}", ans)
        return ans[key]

    def _off_protocol(self, route: str, expected: str, ans: Any, hint: str = "") -> EnvServerError:
        return EnvServerError(f"env server {self.url}{route}: expected {expected} ({self.flavour} flavour), "
                              f"got {json.dumps(ans)[:200]}{hint}")

    def _split_ids(self, split: str) -> list[int]:
        n = self.num_tasks if self.num_tasks is not None else self._server_num_goals()
        test, dev = self.split_sizes
        lo, hi = {"test": (0, test), "dev": (test, test + dev), "train": (test + dev, n)}[split]
        return list(range(min(lo, n), min(hi, n)))

    def _server_num_goals(self) -> int:
        ans = self._transport.request("GET", "/")
        if isinstance(ans, dict) and isinstance(ans.get("num_goals"), int):
            return ans["num_goals"]
        raise DreamGymError(f"key 'env.http.num_tasks': the server at {self.url} does not say how many goals "
                            "(session ids) it has; set env.http.num_tasks=N")

    def _fetch_instructions(self, ids: list[int]) -> list[str]:
        """Instruction of each session id, on `fetch_workers` extra server envs (closed afterwards)."""
        if not ids:
            return []
        workers = max(1, min(self.fetch_workers, len(ids)))
        chunks = [ids[w::workers] for w in range(workers)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(self._fetch_chunk, chunks))
        texts = {i: t for chunk, part in zip(chunks, parts) for i, t in zip(chunk, part)}
        return [texts[i] for i in ids]

    def _fetch_chunk(self, ids: list[int]) -> list[str]:
        t = self._transport
        probe = HttpEnv(self.url, self.flavour, self.env_name, t.timeout_s, t.retries, t.backoff_s)
        try:
            out = []
            for i in ids:
                obs = probe.reset(Task(id=f"{self.env_name}:{i}", instruction="", env=self.env_name,
                                       split="", goal={"index": i})).observation
                if self.flavour == "webshop":
                    out.append(probe.instruction_text)
                else:
                    m = _TASK_LINE.search(obs)
                    out.append(m.group(1).strip() if m else obs.strip())
            return out
        finally:
            probe.close()


def _goal_index(task: Task) -> int:
    """The session id / game index of a task: goal['index'] (or 'game'), else the int after ':' in its id."""
    for key in ("index", "game"):
        value = (task.goal or {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    tail = task.id.rsplit(":", 1)[-1]
    if tail.isdigit():
        return int(tail)
    raise DreamGymError(f"task {task.id!r}: no goal index for the HTTP env (need goal['index'] or an id "
                        "like 'webshop:42')")


class _Transport:
    """One keep-alive HTTP connection with a timeout, retries and exponential backoff."""

    def __init__(self, url: str, timeout_s: float, retries: int, backoff_s: float):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DreamGymError(f"key 'env.http.url': {url!r} is not an http(s)://host:port URL")
        self.url, self.timeout_s, self.retries, self.backoff_s = url, timeout_s, retries, backoff_s
        self._https, self._host, self._port = parts.scheme == "https", parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def request(self, method: str, route: str, payload: Any = None, query: dict | None = None,
                attempts: int | None = None) -> Any:
        """Send, re-sending on connection errors/timeouts/non-200 answers; -> the decoded JSON answer."""
        attempts = attempts or self.retries
        path = self._prefix + route + (f"?{urlencode(query)}" if query else "")
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        why, stale_retry = "", True
        with self._lock:
            i = 0
            while i < attempts:
                reused = self._conn is not None
                try:
                    status, data = self._send(method, path, body, headers)
                except (OSError, http.client.HTTPException) as e:
                    self.close()
                    why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                    if reused and stale_retry and isinstance(e, (ConnectionResetError, BrokenPipeError,
                                                                 http.client.RemoteDisconnected)):
                        stale_retry = False  # the server dropped an idle keep-alive connection: retry now
                        continue
                else:
                    if status == 200:
                        try:
                            return json.loads(data)
                        except (json.JSONDecodeError, UnicodeDecodeError):
                            raise EnvServerError(f"env server {self.url}{route}: answer is not JSON: "
                                                 f"{data[:200]!r}") from None
                    why = f"HTTP {status}: {data[:200].decode(errors='replace')}"
                i += 1
                if i < attempts:
                    time.sleep(self.backoff_s * 2 ** (i - 1))
        raise EnvServerError(f"env server {self.url}{route}: {why} after {attempts} attempt(s) "
                             f"(timeout {self.timeout_s:g}s each); is the server running there? (key env.http.url)")

    def _send(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes]:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout_s)
        self._conn.request(method, path, body=body, headers=headers)
        resp = self._conn.getresponse()
        data = resp.read()
        if resp.will_close:
            self.close()
        return resp.status, data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
