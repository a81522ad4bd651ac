"""Small hand-written ALFWorld games shipped with dreamgym (the default game set of env `alfworld`).

Each folder holds one game in ALFWorld's own on-disk format, as `alfworld-generate` writes it next to
the official data: `game.tw-pddl` (JSON: `pddl_domain` = ALFWorld's `alfred.pddl`, `grammar` =
`alfred.twl2` with the task text filled in, `pddl_problem`, `solvable`, `walkthrough` = the expert's
command list) and `traj_data.json` (`task_type`, `pddl_params`). The folders are written by
`make_games.py` from hand-written room and task specs with fixed seeds; regenerate them with
`python -m dreamgym.envs.alfworld_games.make_games` (needs `pip install 'dreamgym[alfworld]'`).
"""

from pathlib import Path

GAMES_DIR = Path(__file__).resolve().parent
"""the folder holding the shipped game folders"""

__all__ = ["GAMES_DIR"]
