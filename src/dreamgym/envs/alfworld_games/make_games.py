"""Write the shipped ALFWorld games: hand-written rooms and tasks, fixed seeds, ALFWorld's own format.

`python -m dreamgym.envs.alfworld_games.make_games [--out DIR] [--check]` (needs `dreamgym[alfworld]`).

A room (`ROOMS`) lists its receptacle types with how many of each it may have and the objects that may
lie around; a task (`TASKS`) names the ALFWorld task type, the room, the target object and the target
receptacle (or the lamp, for look_at_obj_in_light) and a seed. The seed fixes everything else: how many
receptacles of each type, their AI2-THOR-style ids and locations, where the target objects and 3-6
distractors lie (never already where the goal wants them), the agent's start, and which of ALFWorld's
goal templates words the task. The PDDL problem follows ALFWorld's conventions (mangled ids such as
`Mug_bar__plus_00_dot_32_...`, `canContain`/`pickupable`/`openable`/`heatable`/... facts from
`alfworld.gen.constants`, goals from `alfworld.gen.goal_library`), so ALFWorld's demangler names the
things `mug 1`, `cabinet 2`, ... exactly as in the official games.

Like `alfworld-generate`, the walkthrough is what ALFWorld's hand-coded expert plays (seeded, so the
same every run), or, where that expert does not win within 50 steps, the plan of ALFWorld's `planner`
expert (Fast Downward); `traj_data.json` records which (`expert`). It is checked by replaying it in a
fresh game, which must end won, and not earlier. `--check`
regenerates into a temp folder and compares with the shipped files byte for byte.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dreamgym.envs.alfworld_games import GAMES_DIR

__all__ = ["ROOMS", "TASKS", "GameSpec", "build_game", "write_game", "main"]

ROOMS: dict[str, dict] = {
    "kitchen": {
        "receptacles": {"Cabinet": (2, 4), "CoffeeMachine": (1, 1), "CounterTop": (1, 2), "DiningTable": (1, 1),
                        "Drawer": (1, 3), "Fridge": (1, 1), "GarbageCan": (1, 1), "Microwave": (1, 1),
                        "SinkBasin": (1, 1), "StoveBurner": (1, 2)},
        "objects": ["Apple", "Bowl", "Bread", "ButterKnife", "Cup", "DishSponge", "Egg", "Fork", "Kettle", "Knife",
                    "Lettuce", "Mug", "Pan", "PepperShaker", "Plate", "Pot", "Potato", "SaltShaker", "SoapBottle",
                    "Spatula", "Spoon", "Tomato"],
    },
    "bedroom": {
        "receptacles": {"Bed": (1, 1), "Desk": (1, 1), "Drawer": (2, 4), "Dresser": (0, 1), "GarbageCan": (1, 1),
                        "LaundryHamper": (0, 1), "Safe": (0, 1), "Shelf": (1, 3), "SideTable": (1, 2)},
        "objects": ["AlarmClock", "BaseballBat", "Book", "Bowl", "CD", "CellPhone", "CreditCard", "KeyChain", "Laptop",
                    "Mug", "Pen", "Pencil", "Pillow", "TennisRacket"],
    },
    "livingroom": {
        "receptacles": {"ArmChair": (1, 2), "CoffeeTable": (1, 1), "Drawer": (1, 3), "Dresser": (0, 1),
                        "GarbageCan": (1, 1), "Shelf": (0, 2), "SideTable": (1, 2), "Sofa": (1, 1), "TVStand": (0, 1)},
        "objects": ["Box", "CreditCard", "KeyChain", "Laptop", "Newspaper", "Pillow", "RemoteControl", "Statue",
                    "TissueBox", "Vase", "Watch", "WateringCan"],
    },
    "bathroom": {
        "receptacles": {"BathtubBasin": (0, 1), "Cabinet": (2, 4), "CounterTop": (1, 1), "Drawer": (0, 2),
                        "GarbageCan": (1, 1), "HandTowelHolder": (0, 1), "SinkBasin": (1, 2), "Toilet": (1, 1),
                        "ToiletPaperHanger": (1, 1), "TowelHolder": (0, 1)},
        "objects": ["Candle", "Cloth", "DishSponge", "HandTowel", "Plunger", "SoapBar", "SoapBottle", "SprayBottle",
                    "TissueBox", "ToiletPaper", "Towel"],
    },
}
"""room -> receptacle type -> (min, max) count, and the object types that may lie around"""

EXPERT_STEPS = 50
"""a walkthrough must fit ALFWorld's usual 50-step episode; the hand-coded expert gets that many steps,
else the game's walkthrough is the planner's plan"""
LAMP = "DeskLamp"
LAMP_HOLDERS = ("Desk", "SideTable", "Dresser")
_APPLIANCE = {"pick_clean_then_place_in_recep": ("SinkBasin", "BathtubBasin"),
              "pick_heat_then_place_in_recep": ("Microwave",), "pick_cool_then_place_in_recep": ("Fridge",)}
_DOMAIN_CONSTANTS = {"otype": ("ButterKnife", "Knife"), "rtype": ("Fridge", "Microwave", "SinkBasin")}
"""types alfred.pddl names in its action preconditions: every problem must declare them"""


@dataclass(frozen=True)
class GameSpec:
    """One shipped game: task type, room, target object, target receptacle (or lamp), seed."""

    task_type: str
    room: str
    obj: str
    target: str
    seed: int

    @property
    def name(self) -> str:
        """The folder name, in ALFWorld's `<task type>-<object>-<movable recep>-<target>-<scene>` form."""
        return f"{self.task_type}-{self.obj}-None-{self.target}-{self.room}{self.seed:02d}"


TASKS: list[GameSpec] = [
    GameSpec("pick_and_place_simple", "kitchen", "Mug", "CoffeeMachine", 1),
    GameSpec("pick_and_place_simple", "bedroom", "CellPhone", "Bed", 2),
    GameSpec("pick_and_place_simple", "livingroom", "RemoteControl", "ArmChair", 3),
    GameSpec("pick_and_place_simple", "bathroom", "SoapBottle", "Toilet", 4),
    GameSpec("look_at_obj_in_light", "bedroom", "Book", LAMP, 5),
    GameSpec("look_at_obj_in_light", "bedroom", "AlarmClock", LAMP, 6),
    GameSpec("look_at_obj_in_light", "livingroom", "CreditCard", LAMP, 7),
    GameSpec("look_at_obj_in_light", "livingroom", "KeyChain", LAMP, 8),
    GameSpec("pick_clean_then_place_in_recep", "kitchen", "Apple", "Fridge", 9),
    GameSpec("pick_clean_then_place_in_recep", "kitchen", "Spatula", "Drawer", 10),
    GameSpec("pick_clean_then_place_in_recep", "bathroom", "SoapBar", "Toilet", 11),
    GameSpec("pick_clean_then_place_in_recep", "bathroom", "Cloth", "Cabinet", 12),
    GameSpec("pick_heat_then_place_in_recep", "kitchen", "Potato", "GarbageCan", 13),
    GameSpec("pick_heat_then_place_in_recep", "kitchen", "Mug", "Cabinet", 14),
    GameSpec("pick_heat_then_place_in_recep", "kitchen", "Egg", "CounterTop", 15),
    GameSpec("pick_heat_then_place_in_recep", "kitchen", "Tomato", "DiningTable", 16),
    GameSpec("pick_cool_then_place_in_recep", "kitchen", "Lettuce", "CounterTop", 17),
    GameSpec("pick_cool_then_place_in_recep", "kitchen", "Apple", "Microwave", 18),
    GameSpec("pick_cool_then_place_in_recep", "kitchen", "Bowl", "Cabinet", 19),
    GameSpec("pick_cool_then_place_in_recep", "kitchen", "Pan", "StoveBurner", 20),
    GameSpec("pick_two_obj_and_place", "livingroom", "RemoteControl", "Sofa", 21),
    GameSpec("pick_two_obj_and_place", "bedroom", "CD", "Drawer", 22),
    GameSpec("pick_two_obj_and_place", "bathroom", "ToiletPaper", "Cabinet", 23),
    GameSpec("pick_two_obj_and_place", "kitchen", "Spoon", "Drawer", 24),
]
"""the shipped games: four of each of ALFWorld's six task types"""

_MANGLE = {"-": "_minus_", "|": "_bar_", "+": "_plus_", ".": "_dot_", ",": "_comma_"}


def mangle(thor_id: str) -> str:
    """An AI2-THOR id as ALFWorld writes it in PDDL (`Mug|+00.32|...` -> `Mug_bar__plus_00_dot_32_...`)."""
    return "".join(_MANGLE.get(ch, ch) for ch in thor_id)


def build_game(spec: GameSpec) -> tuple[str, dict, str]:
    """(PDDL problem, traj_data record, task text) of a game; deterministic in the spec."""
    from alfworld.gen import constants, goal_library

    val = constants.VAL_RECEPTACLE_OBJECTS
    rng = random.Random(f"dreamgym-alfworld:{spec.name}")
    room = ROOMS[spec.room]
    used_locs = {(0, 0)}
    start = "loc|0|0|0|30"

    def place() -> tuple[float, float, float, str]:
        while True:
            x, z = round(rng.uniform(-3, 3), 2), round(rng.uniform(-3, 3), 2)
            cell = (round(x * 4), round(z * 4))
            if cell not in used_locs:
                used_locs.add(cell)
                return x, round(rng.uniform(0, 2), 2), z, f"loc|{cell[0]}|{cell[1]}|{rng.choice((0, 1, 2, 3))}|{rng.choice((0, 30, 45, 60))}"

    receps: list[tuple[str, str, str, tuple[float, float, float]]] = []  # (id, type, location, xyz)
    for rtype, (lo, hi) in room["receptacles"].items():
        for _ in range(rng.randint(lo, hi)):
            x, y, z, loc = place()
            coords = f"{x:+06.2f}|{y:+06.2f}|{z:+06.2f}"
            rid = {"SinkBasin": f"Sink|{coords}|SinkBasin", "BathtubBasin": f"Bathtub|{coords}|BathtubBasin"}.get(
                rtype, f"{rtype}|{coords}")
            receps.append((rid, rtype, loc, (x, y, z)))
    rtypes_here = {r[1] for r in receps}
    needed = {spec.target} if spec.task_type != "look_at_obj_in_light" else set()
    needed |= set(_APPLIANCE.get(spec.task_type, ())[:1])
    if spec.task_type == "look_at_obj_in_light" and not rtypes_here & set(LAMP_HOLDERS):
        needed.add(LAMP_HOLDERS[0])
    if not needed <= rtypes_here:
        raise ValueError(f"{spec.name}: room {spec.room!r} lacks {sorted(needed - rtypes_here)}")
    if spec.task_type != "look_at_obj_in_light" and spec.obj not in val[spec.target]:
        raise ValueError(f"{spec.name}: a {spec.target} cannot hold a {spec.obj}")

    objects: list[tuple[str, str, str]] = []  # (id, type, receptacle id)
    taken: set[str] = set()

    def put(otype: str, banned: tuple[str, ...] = ()) -> bool:
        holders = [r for r in receps if (otype in val.get(r[1], ()) or (otype == LAMP and r[1] in LAMP_HOLDERS))
                   and r[1] not in banned and r[0] not in used_holders]
        if not holders:
            return False
        rid, _, _, (x, y, z) = rng.choice(holders)
        while True:
            oid = f"{otype}|{x + rng.uniform(-0.4, 0.4):+06.2f}|{y + rng.uniform(0, 0.3):+06.2f}|{z + rng.uniform(-0.4, 0.4):+06.2f}"
            if oid not in taken:
                taken.add(oid)
                objects.append((oid, otype, rid))
                return True

    # copies of the target object lie in different receptacles: the hand-coded expert does not look twice
    # into the same closed receptacle
    used_holders: set[str] = set()
    banned = (spec.target,) + _APPLIANCE.get(spec.task_type, ())
    copies = rng.choice((2, 3)) if spec.task_type == "pick_two_obj_and_place" else rng.choice((1, 1, 2))
    for _ in range(copies):
        if not put(spec.obj, banned):
            raise ValueError(f"{spec.name}: no receptacle in the room may hold a {spec.obj}")
        used_holders.add(objects[-1][2])
    used_holders.clear()
    if spec.task_type == "look_at_obj_in_light":
        put(LAMP)
    pool = [o for o in room["objects"] if o not in (spec.obj, LAMP)]
    for otype in rng.sample(pool, rng.randint(3, 6)):
        put(otype)

    actions = constants.VAL_ACTION_OBJECTS
    otypes = sorted({o[1] for o in objects} | set(_DOMAIN_CONSTANTS["otype"]))
    rtypes = sorted(rtypes_here | set(_DOMAIN_CONSTANTS["rtype"]))
    declared = (["agent1 - agent"] + [f"{t}Type - otype" for t in otypes] + [f"{t}Type - rtype" for t in rtypes]
                + [f"{mangle(o[0])} - object" for o in sorted(objects)]
                + [f"{mangle(r[0])} - receptacle" for r in sorted(receps)]
                + [f"{mangle(loc)} - location" for loc in sorted({r[2] for r in receps} | {start})])
    init = [f"(atLocation agent1 {mangle(start)})"]
    for rid, rtype, loc, _ in sorted(receps):
        init.append(f"(receptacleType {mangle(rid)} {rtype}Type)")
        if rtype in constants.OPENABLE_CLASS_SET:
            init.append(f"(openable {mangle(rid)})")
        init.append(f"(receptacleAtLocation {mangle(rid)} {mangle(loc)})")
    locs = {r[0]: r[2] for r in receps}
    for oid, otype, rid in sorted(objects):
        o = mangle(oid)
        init.append(f"(objectType {o} {otype}Type)")
        if otype != LAMP:
            init.append(f"(pickupable {o})")
        if otype in constants.MOVABLE_RECEPTACLES_SET:
            init.append(f"(isReceptacleObject {o})")
        for flag, kind in (("cleanable", "Cleanable"), ("heatable", "Heatable"), ("coolable", "Coolable"),
                           ("toggleable", "Toggleable"), ("sliceable", "Sliceable")):
            if otype in actions[kind]:
                init.append(f"({flag} {o})")
        init.append(f"(inReceptacle {o} {mangle(rid)})")
        init.append(f"(objectAtLocation {o} {mangle(locs[rid])})")
    init += [f"(canContain {r}Type {o}Type)" for r in rtypes if r in rtypes_here for o in otypes if o in val.get(r, ())]

    parent = spec.target if spec.task_type != "look_at_obj_in_light" else ""
    toggle = spec.target if spec.task_type == "look_at_obj_in_light" else ""
    goal = goal_library.gdict[spec.task_type]["pddl"].format(obj=spec.obj, recep=parent, toggle=toggle, mrecep="")
    sep = "\n        "
    problem = (f"\n(define (problem plan_dreamgym_{spec.seed:02d})\n(:domain alfred)\n(:objects{sep}"
               f"{sep.join(declared)}\n        )\n(:init{sep}{sep.join(init)}\n        )\n"
               f"{goal.replace('#', '-').strip()}\n")
    text = rng.choice(goal_library.gdict[spec.task_type]["templates"]).format(
        obj=spec.obj.lower(), recep=parent.lower(), toggle=toggle.lower(), mrecep="")
    traj_data = {"task_id": spec.name, "task_type": spec.task_type,
                 "pddl_params": {"object_target": spec.obj, "parent_target": parent, "toggle_target": toggle,
                                 "mrecep_target": "", "object_sliced": False},
                 "scene": {"room": spec.room, "seed": spec.seed},
                 "generator": "dreamgym.envs.alfworld_games.make_games"}
    return problem, traj_data, text


def write_game(spec: GameSpec, out_dir: Path) -> Path:
    """Write `<out_dir>/<name>/{traj_data.json,game.tw-pddl}`; returns the game file. Raises if the
    walkthrough does not win the game."""
    from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    problem, traj_data, text = build_game(spec)
    folder = Path(out_dir) / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "traj_data.json").write_text(json.dumps(traj_data, indent=1) + "\n")  # the expert reads it
    game = {"pddl_domain": Path(ALFRED_PDDL_PATH).read_text(),
            "grammar": Path(ALFRED_TWL2_PATH).read_text().replace("UNKNOWN GOAL", text),
            "pddl_problem": problem, "solvable": None, "walkthrough": None}
    path = folder / "game.tw-pddl"
    path.write_text(json.dumps(game))
    walkthrough, expert = _handcoded_walkthrough(path, spec.name), "handcoded"
    if walkthrough is None:
        walkthrough, expert = _planner_walkthrough(path), "planner"
    if not _replay_wins(path, walkthrough):
        raise RuntimeError(f"{spec.name}: the {expert} expert's walkthrough does not win the game")
    traj_data["expert"] = expert
    (folder / "traj_data.json").write_text(json.dumps(traj_data, indent=1) + "\n")
    game.update(solvable=True, walkthrough=walkthrough)
    path.write_text(json.dumps(game))
    return path


def _handcoded_walkthrough(path: Path, seed: str, max_steps: int = EXPERT_STEPS) -> list[str] | None:
    """ALFWorld's hand-coded expert playing the game (as `alfworld-generate` does): its commands, or None
    if it does not win within `max_steps` (its pick_two policy loses track after a `move` command)."""
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredExpert, AlfredInfos
    from textworld.envs import PddlEnv

    random.seed(seed)  # the expert falls back to random.choice when it would repeat itself
    env = PddlEnv(textworld.EnvInfos(admissible_commands=True, won=True, extras=["gamefile"]))
    env = AlfredExpert(AlfredInfos(AlfredDemangler(env, shuffle=False)), expert_type="handcoded")
    env.load(str(path))
    state, done, commands = env.reset(), False, []
    while not done and len(commands) < max_steps:
        command = state["extra.expert_plan"][0]
        state, _, done = env.step(command)
        commands.append(command)
    return commands if state["won"] else None


def _planner_walkthrough(path: Path) -> list[str]:
    """Fast Downward's plan from the start state (ALFWorld's `planner` expert)."""
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
    from textworld.envs import PddlEnv

    env = AlfredDemangler(PddlEnv(textworld.EnvInfos(policy_commands=True)), shuffle=False)
    env.load(str(path))
    return list(env.reset()["policy_commands"])


def _replay_wins(path: Path, walkthrough: list[str]) -> bool:
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
    from textworld.envs import PddlEnv

    env = AlfredDemangler(PddlEnv(textworld.EnvInfos(admissible_commands=True, won=True)), shuffle=False)
    env.load(str(path))
    state = env.reset()
    for command in walkthrough:
        if command not in state["admissible_commands"] or state["won"]:
            return False
        state, _, _ = env.step(command)
    return bool(state["won"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=GAMES_DIR, help="where to write the game folders")
    parser.add_argument("--check", action="store_true", help="regenerate into a temp folder and compare with --out")
    args = parser.parse_args(argv)
    saved_argv = list(sys.argv)  # fast-downward's translator overwrites sys.argv
    try:
        if not args.check:
            for spec in TASKS:
                path = write_game(spec, args.out)
                print(f"{spec.name}: {len(json.loads(path.read_text())['walkthrough'])} expert steps")
            return 0
        differ = []
        with tempfile.TemporaryDirectory() as tmp:
            for spec in TASKS:
                folder = write_game(spec, Path(tmp)).parent
                if not all(filecmp.cmp(folder / f, args.out / spec.name / f, shallow=False)
                           for f in ("game.tw-pddl", "traj_data.json")):
                    differ.append(spec.name)
        print("identical" if not differ else f"differ: {differ}")
        return 1 if differ else 0
    finally:
        sys.argv = saved_argv


if __name__ == "__main__":
    raise SystemExit(main())
