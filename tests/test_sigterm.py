"""SIGTERM (what `timeout` sends when a resumable chunk's time is up) stops a training command at once with exit
code 143, not at the end of the current RL iteration with exit code 0 (Lightning's own handling, which made a
CPU-study chunk overrun by 22 minutes and report success), and the run resumes from its last checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

DEBUG = "configs/policy/debug.yaml"


def test_sigterm_stops_train_policy_now_with_143_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "dreamgym.cli", "train-policy", "-c", DEBUG, "--algo", "grpo", "--env", "webshop",
            "--run-dir", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DREAMGYM_RUN_DIR", None)
    proc = subprocess.Popen(args + ["max_iterations=500"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not ckpt.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert ckpt.is_file(), (proc.poll(), proc.stdout.read() if proc.poll() is not None else "no checkpoint in time")
    time.sleep(1.0)  # into a later iteration
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out[-3000:]
    assert time.time() - t0 < 30 and not (run / "summary.json").exists()
    done = torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] + 1  # one epoch per RL iteration
    assert 1 <= done < 500
    res = subprocess.run(args + ["--resume", f"max_iterations={done + 1}"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["iterations"] == done + 1
