"""TextWorld games for the `textworld` env: difficulty levels, seeds per split, and an on-disk cache of
games generated locally by `textworld`'s own generator (`tw-make custom`-equivalent: `make_game` +
`compile_game`, the Inform 7 compiler that ships inside the `textworld` wheel). Nothing is downloaded.

A game is fixed by its `GameSpec` (rooms, objects, quest length, seed): the same spec gives the same
game file byte for byte on any machine with the same `textworld` version (checked by a test), so a
task record carries the spec, not a path. `ensure_game(spec, cache_dir)` returns the cached game or
generates it (about 0.5 s to sample + 1 s to compile on one CPU core); files are written to a temporary
folder and renamed into place, the `.task.json` sidecar last, so a killed or concurrent run never
leaves a half-written game behind. `split_games` lists the games of a split, keeping only games
whose walkthrough wins them (so the oracle is an oracle); the skipped seeds are fixed too, so the list
stays deterministic. Cache layout:
`<cache_dir>/tw-<textworld version>/r<rooms>-o<objects>-q<quest length>/seed<seed>.{z8,json,task.json}`.

Used by `envs/textworld_env.py`; needs the optional dependency `pip install 'dreamgym[textworld]'`.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from dreamgym.errors import DreamGymError

__all__ = ["GameSpec", "GameRecord", "LEVELS", "SPLIT_OFFSETS", "game_seed", "level_spec", "ensure_game",
           "split_games", "start_game", "default_cache_dir", "require_textworld"]

LEVELS: dict[int, tuple[int, int, int]] = {
    1: (1, 3, 1),
    2: (2, 5, 2),
    3: (3, 8, 4),
    4: (6, 12, 8),
}
"""difficulty level -> (rooms, objects, quest length); quest length bounds the walkthrough length"""

SPLIT_OFFSETS = {"train": 0, "dev": 100_000, "test": 200_000}
"""game seeds of the splits live in disjoint ranges, so no test or dev game is ever a train game"""

_MAX_GAMES_PER_SPLIT = 100_000


@dataclass(frozen=True)
class GameSpec:
    """Everything that fixes one generated game."""

    rooms: int
    objects: int
    quest_length: int
    seed: int

    @property
    def key(self) -> str:
        return f"r{self.rooms}-o{self.objects}-q{self.quest_length}"


@dataclass(frozen=True)
class GameRecord:
    """A generated game on disk plus what a task needs from it without opening it."""

    spec: GameSpec
    path: Path
    """the compiled game (.z8); its `.json` twin (the logic state textworld reads) lies beside it"""
    objective: str
    walkthrough: list[str]
    max_score: int
    walkthrough_wins: bool
    """whether replaying the walkthrough wins the game (checked once, at generation): now and then the
    Inform 7 parser finds a walkthrough command ambiguous ("Which do you mean, the safe or the ...")"""


def game_seed(seed: int, split: str, index: int) -> int:
    """The generator seed of game `index` of a split: `seed * 1_000_000 + SPLIT_OFFSETS[split] + index`."""
    if split not in SPLIT_OFFSETS:
        raise DreamGymError(f"split {split!r}: expected one of {', '.join(SPLIT_OFFSETS)}")
    if not 0 <= index < _MAX_GAMES_PER_SPLIT:
        raise DreamGymError(f"game index {index}: expected 0 <= index < {_MAX_GAMES_PER_SPLIT}")
    if seed < 0:
        raise DreamGymError(f"key 'env.textworld.seed': got {seed}, expected a non-negative int")
    return seed * 1_000_000 + SPLIT_OFFSETS[split] + index


def level_spec(level: int, seed: int) -> GameSpec:
    """The spec of a game of a difficulty level (see LEVELS)."""
    if level not in LEVELS:
        raise DreamGymError(f"key 'env.textworld.levels': unknown level {level!r}, expected one of "
                            f"{', '.join(map(str, LEVELS))}")
    rooms, objects, quest_length = LEVELS[level]
    return GameSpec(rooms, objects, quest_length, seed)


def default_cache_dir() -> Path:
    """`$DREAMGYM_CACHE/textworld`, else `$XDG_CACHE_HOME/dreamgym/textworld`, else `~/.cache/dreamgym/textworld`."""
    if os.environ.get("DREAMGYM_CACHE"):
        return Path(os.environ["DREAMGYM_CACHE"]) / "textworld"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dreamgym" / "textworld"


def require_textworld():
    """The `textworld` module, or an error saying how to install it."""
    try:
        import textworld
    except ImportError as e:
        raise DreamGymError(f"env 'textworld' needs the textworld package ({e}); install it with "
                            "pip install 'dreamgym[textworld]' (or textworld==1.7.0)") from None
    return textworld


def ensure_game(spec: GameSpec, cache_dir: Path) -> GameRecord:
    """The cached game of `spec`, generated and compiled first if it is not in the cache yet."""
    textworld = require_textworld()
    folder = Path(cache_dir) / f"tw-{textworld.__version__}" / spec.key
    stem = f"seed{spec.seed}"
    sidecar = folder / f"{stem}.task.json"
    if not sidecar.is_file():
        _generate(spec, folder, stem)
    meta = json.loads(sidecar.read_text())
    return GameRecord(spec=spec, path=folder / f"{stem}.z8", objective=meta["objective"],
                      walkthrough=list(meta["walkthrough"]), max_score=int(meta["max_score"]),
                      walkthrough_wins=bool(meta["walkthrough_wins"]))


def split_games(level: int, seed: int, split: str, n: int, cache_dir: Path) -> list[GameRecord]:
    """The first `n` games of a level in a split whose walkthrough wins, in seed order (index 0, 1, ...)."""
    out: list[GameRecord] = []
    index = 0
    while len(out) < n:
        if index >= 2 * n + 20:
            raise DreamGymError(f"textworld: level {level}, split {split}: only {len(out)} of the first {index} "
                                f"generated games are winnable by their walkthrough; use fewer games or another seed")
        record = ensure_game(level_spec(level, game_seed(seed, split, index)), cache_dir)
        if record.walkthrough_wins:
            out.append(record)
        index += 1
    return out


def start_game(path: Path, **infos: bool):
    """`textworld.start` on a compiled game, requesting the named `EnvInfos` (admissible_commands, won, ...).
    Jericho's "not fully supported" warning is silenced: TextWorld tracks score and moves itself."""
    textworld = require_textworld()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not fully supported.*")
        return textworld.start(str(path), request_infos=textworld.EnvInfos(**infos))


# -- internals ---------------------------------------------------------------------------------
def _generate(spec: GameSpec, folder: Path, stem: str) -> None:
    """make_game + compile_game into a temp folder, then rename into `folder` (sidecar last)."""
    textworld = require_textworld()
    from textworld.generator import compile_game, make_game

    folder.mkdir(parents=True, exist_ok=True)
    options = textworld.GameOptions()
    options.seeds = spec.seed
    options.nb_rooms, options.nb_objects, options.quest_length = spec.rooms, spec.objects, spec.quest_length
    options.force_recompile = True
    with tempfile.TemporaryDirectory(dir=folder, prefix=f".{stem}-") as tmp:
        options.path = str(Path(tmp) / f"{stem}.z8")
        try:
            game = make_game(options)
            compile_game(game, options)
        except Exception as e:  # generator/compiler failures name the spec that caused them
            raise DreamGymError(f"textworld: could not generate the game {asdict(spec)}: "
                                f"{type(e).__name__}: {e}") from e
        walkthrough = list(game.walkthrough or [])
        meta = {"spec": asdict(spec), "objective": game.objective, "walkthrough": walkthrough,
                "max_score": int(game.max_score), "textworld": textworld.__version__,
                "walkthrough_wins": _walkthrough_wins(textworld, Path(options.path), walkthrough)}
        (Path(tmp) / f"{stem}.task.json").write_text(json.dumps(meta, indent=1))
        for ext in (".z8", ".json", ".task.json"):
            os.replace(Path(tmp) / f"{stem}{ext}", folder / f"{stem}{ext}")


def _walkthrough_wins(textworld, path: Path, walkthrough: list[str]) -> bool:
    """Replay the walkthrough in the compiled game; True if it ends won."""
    if not walkthrough:
        return False
    env = start_game(path, won=True)
    try:
        state = env.reset()
        for command in walkthrough:
            state, _, done = env.step(command)
            if done:
                break
        return bool(state["won"])
    finally:
        env.close()
