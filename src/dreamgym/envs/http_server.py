"""Serve native env instances over AgentGym's HTTP protocol (WebShop flavour, docs/contracts
"AgentGym HTTP shapes"), so AgentGym clients and our own `HttpEnv` can drive them.

Routes: `POST /create` -> bare int env_idx; `POST /reset {"env_idx", "session_id"}` -> `[observation,
null]` (session id i = goal index i via `env.task_by_index(i)`; a missing session id draws a seeded
random goal); `POST /step {"env_idx", "action"}` -> `{"state", "reward", "done", "info": null}`;
`GET /observation|/available_actions|/instruction_text|/state ?env_idx=`; `GET /` (hello, incl.
`num_goals`), `GET /list_envs`, `POST /close {"env_idx"}`. Every failure (unknown id or route, step
before reset or after done, malformed JSON, missing field, an exception inside the env, the `max_envs`
cap) is HTTP 200 with `{"error": "..."}` (AgentGym's convention), never a 500 or a hang.

Used by `dreamgym serve-env` (pipelines/serve_env.py), tests and benchmarks/env_steps.py. Any env with
`task_by_index(i)` can be served (`EnvServer(template, spawn)`); `build_server(cfg)` makes the template
with `make_env` and spawns further envs cheaply (a `spawn()` method if the env has one; WebShop envs
share the template's loaded catalog, search index and title scorer). Each env has its own lock, the id
table another, so concurrent envs are independent. The server is WebShop flavour only: AgentGym's
ALFWorld flavour (`/create` -> {"id"}) is spoken by the client (`http_client.py`), not served here.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

from dreamgym.config import SPLITS, EnvConfig, ServeEnvConfig
from dreamgym.envs.base import make_env

__all__ = ["EnvServer", "build_server", "serve", "env_spawner", "MAX_BODY_BYTES"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
"""largest request body accepted (1 MiB); larger ones are answered with an error"""


class EnvServer:
    """A table of live env instances behind AgentGym's WebShop-flavour routes.

    `handle(method, route, query, body)` is the whole protocol (pure Python, no sockets); `start(host,
    port)` puts it behind a `ThreadingHTTPServer` in a daemon thread; `shutdown()` stops it.
    """

    def __init__(self, template: Any, spawn: Callable[[], Any] | None = None, name: str = "env",
                 max_envs: int = 4096, seed: int = 0):
        if not callable(getattr(template, "task_by_index", None)):
            raise TypeError(f"{type(template).__name__} cannot be served: it has no task_by_index(i)")
        self.template = template
        self.spawn = spawn or env_spawner(template)
        self.name = name
        self.max_envs = max_envs
        self.num_goals = _num_goals(template)
        self._rng = random.Random(seed)
        self._envs: dict[int, _Slot] = {}
        self._next_id = 0
        self._table = threading.Lock()  # guards _envs, _next_id, _rng and the counters
        self.requests = self.errors = self.envs_created = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes: dict[str, tuple[str, Callable[[dict], Any]]] = {
            "/": ("GET", self._hello), "/list_envs": ("GET", self._list_envs),
            "/create": ("POST", self._create), "/reset": ("POST", self._reset), "/step": ("POST", self._step),
            "/close": ("POST", self._close), "/observation": ("GET", self._observation),
            "/available_actions": ("GET", self._available_actions),
            "/instruction_text": ("GET", self._instruction_text), "/state": ("GET", self._state),
        }

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> "EnvServer":
        """Bind (port 0 = any free port, see `.port`) and serve in a daemon thread."""
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.app = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"dreamgym-env-server:{self.port}", daemon=True)
        self._thread.start()
        return self

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0]) if self._httpd else ""

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1]) if self._httpd else 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def shutdown(self) -> None:
        """Stop accepting requests, close the socket and every live env (idempotent)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_connections()
            self._httpd = None
        with self._table:
            slots, self._envs = list(self._envs.values()), {}
        for slot in slots:
            _close_slot(slot)

    def __enter__(self) -> "EnvServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def stats(self) -> dict:
        """Counters for summary.json."""
        with self._table:
            return {"requests": self.requests, "errors": self.errors, "envs_created": self.envs_created,
                    "envs_live": len(self._envs)}

    # -- the protocol ---------------------------------------------------------------------------
    def handle(self, method: str, route: str, query: dict[str, str], body: Any,
               bad_body: str | None = None) -> Any:
        """One request -> the JSON payload to answer with HTTP 200 (errors as {"error": ...}).
        `bad_body`: why the body could not be read (malformed JSON, too large): answered as the error."""
        with self._table:
            self.requests += 1
        if bad_body is not None:
            return self._error(f"{method} {route}: {bad_body}")
        try:
            entry = self._routes.get(route)
            if entry is None:
                raise _Reject(f"unknown route {method} {route}; routes: "
                              + ", ".join(f"{m} {r}" for r, (m, _) in self._routes.items()))
            want, fn = entry
            if method != want:
                raise _Reject(f"{route} expects {want}, got {method}")
            if body is not None and not isinstance(body, dict):
                raise _Reject(f"{route}: JSON body must be an object, got {type(body).__name__}")
            return fn({**query, **(body or {})})
        except _Reject as e:
            return self._error(str(e))
        except Exception as e:  # an env call failed: answer it, log it, keep serving
            logger.exception("env server: %s %s failed", method, route)
            return self._error(f"{route}: {type(e).__name__}: {e}")

    def _error(self, message: str) -> dict:
        with self._table:
            self.errors += 1
        return {"error": message}

    def _hello(self, args: dict) -> dict:
        return {"message": f"This is environment {self.name}, served by dreamgym (AgentGym protocol, "
                           "WebShop flavour).", "env": self.name, "num_goals": self.num_goals,
                "live_envs": len(self._envs), "max_envs": self.max_envs}

    def _list_envs(self, args: dict) -> list[int]:
        with self._table:
            return sorted(self._envs)

    def _create(self, args: dict) -> int:
        with self._table:
            if len(self._envs) >= self.max_envs:
                raise _Reject(f"max_envs={self.max_envs} envs are live; POST /close some first")
            idx, self._next_id = self._next_id, self._next_id + 1
            self._envs[idx] = slot = _Slot(env=None)  # reserved; built outside the table lock
            slot.lock.acquire()
        try:
            slot.env = self.spawn()
        except BaseException:
            with self._table:
                self._envs.pop(idx, None)
            raise
        finally:
            slot.lock.release()
        with self._table:
            self.envs_created += 1
        return idx

    def _reset(self, args: dict) -> list:
        session = args.get("session_id")
        if session is None:
            with self._table:
                session = self._rng.randrange(self.num_goals) if self.num_goals else 0
        session = _as_int(session, "session_id")
        with self._locked(args) as (slot, idx):
            task = slot.env.task_by_index(session)
            result = slot.env.reset(task)
            slot.task, slot.done, slot.observation = task, False, result.observation
        return [result.observation, None]

    def _step(self, args: dict) -> dict:
        action = args.get("action")
        if not isinstance(action, str):
            raise _Reject(f"/step: field 'action' must be a string, got {_describe(action)}")
        with self._locked(args) as (slot, idx):
            if slot.task is None:
                raise _Reject(f"env {idx}: POST /reset before /step")
            if slot.done:
                raise _Reject(f"env {idx}: the episode is over (done); POST /reset to start another")
            result = slot.env.step(action)
            slot.done, slot.observation = bool(result.done), result.observation
        return {"state": result.observation, "reward": float(result.reward), "done": bool(result.done),
                "info": None}

    def _close(self, args: dict) -> dict:
        idx = _as_int(args.get("env_idx"), "env_idx")
        with self._table:
            slot = self._envs.pop(idx, None)
        if slot is None:
            raise _Reject(f"unknown env_idx {idx}; live envs: {_few(self._list_envs({}))}")
        _close_slot(slot)
        return {"env_idx": idx, "closed": True}

    def _observation(self, args: dict) -> str:
        with self._locked(args) as (slot, idx):
            obs = getattr(slot.env, "observation", None)
            return obs if isinstance(obs, str) else slot.observation

    def _available_actions(self, args: dict) -> dict:
        with self._locked(args) as (slot, idx):
            page_actions = getattr(slot.env, "page_actions", None)
            if callable(page_actions):
                d = page_actions()
                return {"has_search_bar": bool(d["has_search_bar"]), "clickables": list(d["clickables"])}
            return _page_actions_of(slot.env.available_actions() if slot.task is not None else [])

    def _instruction_text(self, args: dict) -> str:
        with self._locked(args) as (slot, idx):
            text = getattr(slot.env, "instruction_text", None)
            return text if isinstance(text, str) else (slot.task.instruction if slot.task else "")

    def _state(self, args: dict) -> dict:
        with self._locked(args) as (slot, idx):
            state = getattr(slot.env, "state", None)
            state = state() if callable(state) else state
            if isinstance(state, dict):
                return {"url": str(state.get("url", "")), "html": str(state.get("html", "")),
                        "instruction_text": str(state.get("instruction_text", ""))}
            return {"url": "", "html": slot.observation,
                    "instruction_text": slot.task.instruction if slot.task else ""}

    @contextmanager
    def _locked(self, args: dict) -> Iterator[tuple["_Slot", int]]:
        """The live env named by args['env_idx'], its lock held for the block."""
        idx = _as_int(args.get("env_idx"), "env_idx")
        with self._table:
            slot = self._envs.get(idx)
            live = sorted(self._envs)
        if slot is None:
            raise _Reject(f"unknown env_idx {idx}; live envs: {_few(live)} (POST /create first)")
        with slot.lock:
            if slot.closed or slot.env is None:
                raise _Reject(f"env {idx} was closed")
            yield slot, idx


def env_spawner(template: Any, env_cfg: EnvConfig | None = None) -> Callable[[], Any]:
    """How to make more envs like `template` without reloading its data.

    `template.spawn()` if the env defines it (native WebShop: a sibling sharing the loaded catalog, its
    BM25 index and the title scorer); otherwise `make_env(env_cfg)` each time (slow for heavy envs:
    give them a `spawn()`)."""
    spawn = getattr(template, "spawn", None)
    if callable(spawn):
        return spawn
    if env_cfg is None:
        raise TypeError(f"{type(template).__name__} has no spawn(); pass env_cfg to build more with make_env")
    return lambda: make_env(env_cfg)


def build_server(cfg: ServeEnvConfig) -> EnvServer:
    """The template env via `make_env(cfg.env)` (loads the data once) and a server around it."""
    template = make_env(cfg.env)
    return EnvServer(template, env_spawner(template, cfg.env), name=cfg.env.name, max_envs=cfg.max_envs,
                     seed=cfg.seed)


def serve(cfg: ServeEnvConfig, host: str | None = None, port: int | None = None) -> EnvServer:
    """Build and start a server in a daemon thread (host/port default to the config's; port 0 = any
    free port, read it from `.port`/`.url`). Stop it with `.shutdown()` or a `with` block."""
    server = build_server(cfg)
    return server.start(cfg.host if host is None else host, cfg.port if port is None else port)


# -- internals ---------------------------------------------------------------------------------

class _Reject(Exception):
    """A bad request: answered as {"error": message}, not logged as a server fault."""


@dataclass
class _Slot:
    """One live env: its lock, the task it runs and whether its episode is over."""

    env: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    task: Any = None
    done: bool = False
    closed: bool = False
    observation: str = ""


def _close_slot(slot: _Slot) -> None:
    with slot.lock:
        slot.closed = True
        if slot.env is not None:
            try:
                slot.env.close()
            except Exception:
                logger.exception("env server: closing an env failed")


def _as_int(value: Any, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise _Reject(f"field '{key}' must be an integer, got {_describe(value)}")


def _describe(value: Any) -> str:
    return "nothing (missing)" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _few(ids: list[int], n: int = 10) -> str:
    return "none" if not ids else ", ".join(map(str, ids[:n])) + (f", ... ({len(ids)} in all)" if len(ids) > n else "")


def _page_actions_of(actions: list[str]) -> dict:
    """An env without page_actions(): clickables from `click[x]`, the search bar from `search[...]`."""
    return {"has_search_bar": any(a.startswith("search[") for a in actions),
            "clickables": [a[len("click["):-1] for a in actions if a.startswith("click[") and a.endswith("]")]}


def _num_goals(env: Any) -> int:
    """How many session ids the env answers: its catalog's goals, else the sum of its splits."""
    goals = getattr(getattr(env, "catalog", None), "goals", None)
    if goals is not None:
        return len(goals)
    return sum(len(env.tasks(s)) for s in SPLITS)


class _HTTPServer(ThreadingHTTPServer):
    """Daemon handler threads; remembers open connections so shutdown can close keep-alive ones."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # many clients connecting at once must not overflow the listen backlog
    app: EnvServer

    def __init__(self, *args: Any, **kwargs: Any):
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Hang up on every client still connected (idle keep-alive ones would keep being served)."""
        with self.connections_lock:
            open_now = list(self.connections)
        for sock in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive; every answer is 200 + JSON (the payload comes from EnvServer.handle)."""

    protocol_version = "HTTP/1.1"
    server_version = "dreamgym-env-server/1"
    timeout = 300  # an idle keep-alive connection is dropped after 5 minutes
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stalls
    server: _HTTPServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    do_PUT = do_DELETE = do_PATCH = do_POST  # answered by handle() as a wrong method

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        route = "/" + url.path.strip("/")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        app = self.server.app
        try:
            body, bad_body = self._read_body(), None
        except _Reject as e:
            body, bad_body = None, str(e)
        payload = app.handle(method, route, query, body if method != "GET" else None, bad_body)
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> Any:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise _Reject("bad Content-Length header") from None
        if n > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body makes the connection unusable
            raise _Reject(f"request body of {n} bytes exceeds {MAX_BODY_BYTES}")
        raw = self.rfile.read(n) if n > 0 else b""
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _Reject(f"malformed JSON body: {e}") from None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        logger.debug("%s - %s", self.address_string(), format % args)
