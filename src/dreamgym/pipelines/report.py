"""The comparison report of a quickstart (or CPU study) run: `report.md` (real-env success of every policy
with Wilson 95% intervals, mean reward, the real/synthetic transitions each method used, wall clock per
step, the sizes that make it smoke-scale) and `report.png` (the same success rates as bars with interval
whiskers, drawn with Pillow so no plotting stack is needed)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_report", "method_costs", "markdown_table", "draw_bars", "LABELS"]

LABELS = {"base": "base model (no training)", "sft": "SFT warm start", "synthetic_only": "DreamGym (synthetic only)",
          "s2r": "DreamGym-S2R", "real_only": "real-env RL (same real budget)", "oracle": "oracle (scripted)",
          "random": "random (scripted)"}


def markdown_table(rows: dict[str, dict], costs: dict[str, dict]) -> str:
    """One line per policy: success rate [CI], mean reward, avg steps, episodes, training transitions."""
    lines = ["| policy | success rate | 95% CI (Wilson) | mean reward | avg steps | episodes | real transitions "
             "(training) | synthetic transitions |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lo, hi = r["success_rate_ci95"]
        c = costs.get(name, {})
        lines.append(f"| {LABELS.get(name, name)} | {r['success_rate']:.3f} | [{lo:.3f}, {hi:.3f}] | "
                     f"{r['mean_reward']:.3f} | {r['avg_steps']:.2f} | {r['episodes']} | "
                     f"{c.get('real', '-')} | {c.get('synthetic', '-')} |")
    return "\n".join(lines)


def draw_bars(rows: dict[str, dict], path: Path, title: str) -> None:
    """Horizontal bars of success rate with their 95% interval, one per policy, as a PNG."""
    from PIL import Image, ImageDraw

    width, left, bar_h, gap, top = 900, 300, 26, 14, 50
    height = top + len(rows) * (bar_h + gap) + 40
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 12), title, fill="black")
    span = width - left - 40
    for i, (name, r) in enumerate(rows.items()):
        y = top + i * (bar_h + gap)
        d.text((10, y + 7), LABELS.get(name, name), fill="black")
        x1 = left + int(span * r["success_rate"])
        d.rectangle([left, y, max(x1, left + 1), y + bar_h], fill=(70, 120, 190))
        lo, hi = r["success_rate_ci95"]
        xl, xh, ym = left + int(span * lo), left + int(span * hi), y + bar_h // 2
        d.line([xl, ym, xh, ym], fill="black", width=2)
        d.line([xl, y + 5, xl, y + bar_h - 5], fill="black", width=2)
        d.line([xh, y + 5, xh, y + bar_h - 5], fill="black", width=2)
        d.text((min(xh + 6, width - 60), y + 7), f"{r['success_rate']:.2f}", fill="black")
    axis_y = top + len(rows) * (bar_h + gap)
    d.line([left, axis_y, left + span, axis_y], fill="black")
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + int(span * tick)
        d.line([x, axis_y, x, axis_y + 5], fill="black")
        d.text((x - 10, axis_y + 8), f"{tick:.2f}", fill="black")
    img.save(path)


def _num(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "n/a"


def method_costs(steps: dict[str, dict]) -> dict[str, dict[str, int]]:
    """Per trained method, the real and synthetic transitions it used beyond the shared offline data (SFT: the
    oracle demonstrations), from the quickstart's step summaries."""
    s2r, real = steps["s2r"], steps["real_only"]
    p1, p2 = s2r["phases"]["synthetic"], s2r["phases"]["real"]
    return {"synthetic_only": {"real": 0, "synthetic": p1["synthetic_transitions"]},
            "s2r": {"real": p2["real_transitions"], "synthetic": p1["synthetic_transitions"]},
            "real_only": {"real": real["real_transitions"], "synthetic": 0},
            "sft": {"real": steps["collect_oracle"]["transitions"], "synthetic": 0},
            "base": {"real": 0, "synthetic": 0}}


def write_report(run_path: Path, cfg, rows: dict[str, dict], steps: dict[str, dict]) -> Path:
    """report.md + report.png into `run_path` from the quickstart's step summaries."""
    s2r, real = steps["s2r"], steps["real_only"]
    p1, p2 = s2r["phases"]["synthetic"], s2r["phases"]["real"]
    costs = method_costs(steps)
    wall = {name: s.get("wall_clock_s", {}).get("total") for name, s in steps.items()}
    oracle = steps["collect_oracle"]
    md = [f"# DreamGym comparison on {cfg.env.name} ({cfg.eval_split} split)", "",
          f"Every policy plays the same first {cfg.eval_episodes} {cfg.eval_split} tasks, greedy. **Smoke scale:** "
          f"{cfg.demos} oracle + {cfg.failures} random "
          + (f"+ {cfg.near_misses} noisy-oracle (epsilon {cfg.near_miss_epsilon:g}) " if cfg.near_misses else "")
          + "train episodes of offline data, "
          f"{p1['iterations']} synthetic RL iteration(s), a real budget of {s2r['real_budget']} transitions for S2R "
          f"and for real-only RL. With {cfg.eval_episodes} episodes per row the 95% intervals are wide: differences "
          "inside them are not evidence. RL methods start from the SFT warm start (the base model scores about 0 "
          "unaided).", "",
          markdown_table(rows, costs), "",
          "Transitions: real env steps each method trained on beyond the shared offline data "
          f"({oracle['transitions']} oracle transitions for SFT; the buffer and the experience model also saw "
          f"the random episodes); evaluation episodes are not counted.", "",
          "## Wall clock per step (s)", "", "| step | seconds |", "|---|---|"]
    md += [f"| {name} | {w:.1f} |" for name, w in wall.items() if w is not None]
    wm = steps.get("world_model", {})
    md += ["", "## What the synthetic phase could learn from", "",
           f"- experience model: {wm.get('global_step', '?')} LoRA steps, {wm.get('tokens_trained', '?')} target tokens "
           f"trained, validation loss {_num(wm.get('val_loss_first'))} -> {_num(wm.get('val_loss'))}",
           f"- its answers in the synthetic env: parse-failure rate {_num(p1.get('wm_parse_fail_rate'))} (a failed "
           "answer is a no-op step with reward 0, so at rate 1.0 synthetic training has no signal)",
           f"- GRPO groups without reward variance: {_num(p1.get('zero_var_group_share'))} of the synthetic "
           f"phase's, {_num(p2.get('zero_var_group_share'))} of the real phase's; policy updates made: "
           f"{p1.get('policy_updates', '?')} synthetic, {p2.get('policy_updates', '?')} real, "
           f"{real.get('policy_updates', '?')} real-only"]
    md += ["", "## Cost ledger (whole run)", "",
           f"- S2R: {p2['real_transitions']} real + {p1['synthetic_transitions']} synthetic transitions, "
           f"{s2r['tokens_generated']} tokens generated, {s2r['tokens_trained']} trained",
           f"- real-only: {real['real_transitions']} real transitions, {real['tokens_generated']} tokens generated, "
           f"{real['tokens_trained']} trained",
           f"- GPU hours: {s2r.get('gpu_hours', 0) + real.get('gpu_hours', 0):.4f}", "",
           "![success rates](report.png)", ""]
    path = run_path / "report.md"
    path.write_text("\n".join(md))
    draw_bars(rows, run_path / "report.png", f"Real-env success on {cfg.env.name}/{cfg.eval_split} "
                                             f"({cfg.eval_episodes} episodes per row, 95% Wilson intervals)")
    return path
