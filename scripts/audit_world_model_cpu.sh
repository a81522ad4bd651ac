#!/usr/bin/env bash
# Issue 5's CPU check of the embedded experience model, end to end (~3 h on an idle 2-core CPU: fit ~85 min for 260
# steps, audit ~35 min per mode): collect 100 oracle + 100 random train trajectories and 40 oracle + 160 random
# held-out dev ones, build the replay buffer
# (train only), annotate with rule rationales (evidence first, then the outcome), fit the LoRA experience
# model with configs/world_model/cpu.yaml, and audit it on the dev transitions (full / no retrieval /
# no reasoning). Usage: bash scripts/audit_world_model_cpu.sh [OUT_DIR] [extra fit-world-model overrides]
set -euo pipefail
OUT=${1:-logs/audit_cpu}; shift || true
DG=${DREAMGYM:-dreamgym}
mkdir -p "$OUT"
for split in train dev; do
  for policy in oracle random; do
    # dev: 160 random episodes (seed 7; ~40% end in a purchase, nearly all failed) so that failed purchases
    # are not outnumbered by the oracle's 40 successful ones among the audited terminal steps
    n=100; seed=0
    [ "$split" = dev ] && { [ "$policy" = random ] && { n=160; seed=7; } || n=40; }
    f="$OUT/${split}_${policy}.jsonl"
    [ -s "$f" ] || $DG collect --env webshop --policy "$policy" --episodes "$n" --split "$split" --seed "$seed" \
        --out "$f" --run-dir "$OUT/runs/collect_${split}_${policy}" > /dev/null
  done
  cat "$OUT/${split}_oracle.jsonl" "$OUT/${split}_random.jsonl" > "$OUT/$split.jsonl"
done
[ -d "$OUT/buffer" ] || $DG buffer build --from "$OUT/train.jsonl" --out "$OUT/buffer" > /dev/null
[ -f "$OUT/runs/annotate/summary.json" ] || $DG annotate --data "$OUT/train.jsonl" --buffer "$OUT/buffer" \
    --out "$OUT/sft.jsonl" --run-dir "$OUT/runs/annotate" --teacher rule > /dev/null
if [ -f "$OUT/wm/summary.json" ]; then echo "fit: $OUT/wm exists (kept)"; else
  $DG fit-world-model -c configs/world_model/cpu.yaml --data "$OUT/sft.jsonl" --run-dir "$OUT/wm" \
      sft.max_time_s=6000 sft.max_steps=260 "$@" > /dev/null
fi
$DG eval-world-model -c configs/world_model/eval_cpu.yaml --data "$OUT/dev.jsonl" --world-model "$OUT/wm" \
    --buffer "$OUT/buffer" --run-dir "$OUT/eval" > /dev/null
python3 - "$OUT" <<'PY'
import json, sys
s = json.load(open(f"{sys.argv[1]}/eval/summary.json"))
keys = ["reward_accuracy", "majority_baseline_accuracy", "terminal_balanced_accuracy", "success_precision",
        "success_recall", "next_state_similarity_deterministic", "next_state_similarity_other",
        "next_state_exact_match_deterministic", "next_state_exact_match_other", "parse_fail_rate"]
print("| mode | " + " | ".join(keys) + " |")
for mode, m in s["by_mode"].items():
    print(f"| {mode} | " + " | ".join(f"{m.get(k):.3f}" if isinstance(m.get(k), float) else str(m.get(k)) for k in keys) + " |")
PY
