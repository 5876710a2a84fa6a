#!/usr/bin/env bash
# The main job's quality against training time (issue 9's curve): one run of the default shapes
# model with EMA snapshots at 10, 20 and 40 minutes, trained for MINUTES (60), then every snapshot
# and the final EMA scored by `diffuse eval` (strict, the 300 built-in prompts). The table goes to
# docs/training_curve.md.
#   bash scripts/training_curve.sh                 (~62 min of training and evaluation on 2 cores)
#   RUN=out/curve60 bash scripts/training_curve.sh (score a run made before, with the same snapshots)
#   CONFIG=my.json bash scripts/training_curve.sh  (keys over the default; snapshot_minutes is set here)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DIFFUSE_BUILD_DIR:-$root/build}
minutes=${MINUTES:-60}
doc=${DOC:-$root/docs/training_curve.md}
run=${RUN:-}
diffuse=$build/bin/diffuse

if [ -z "$run" ]; then
  "$root/scripts/install_deps.sh"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
  cmake --build "$build" --target diffuse_cli
  run=$root/out/curve
  [ -e "$run/state.json" ] && { echo "training_curve: $run holds a run; move it or pass RUN=$run" >&2; exit 2; }
  mkdir -p "$run"
  python3 - "${CONFIG:-}" "$run.config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1])) if sys.argv[1] else {}
c["snapshot_minutes"] = [10, 20, 40]
json.dump(c, open(sys.argv[2], "w"))
EOF
  "$diffuse" train --out "$run" --minutes "$minutes" --config "$run.config.json"
fi
[ -e "$run/state.json" ] || { echo "training_curve: $run holds no training run" >&2; exit 2; }

# Score each snapshot that exists, then the run's final EMA.
rows=()
for m in 10 20 40; do
  w=$run/snapshots/ema-${m}min.safetensors
  [ -e "$w" ] || continue
  "$diffuse" eval --checkpoint "$run" --weights "$w" --out "$run/eval-${m}min" > /dev/null
  rows+=("$m:$run/eval-${m}min/eval.json")
done
"$diffuse" eval --checkpoint "$run" --out "$run/eval-final" > /dev/null
rows+=("final:$run/eval-final/eval.json")

python3 - "$run" "$doc" "${rows[@]}" <<'EOF'
import datetime, json, sys
run, doc, rows = sys.argv[1], sys.argv[2], sys.argv[3:]
metrics = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
steps = [m for m in metrics if "loss" in m]
vals = [m for m in metrics if "val_loss_ema" in m]
cats = ["single_object", "colors", "counting", "two_object", "position", "color_attr"]

def at(minutes):  # the step at which the trainer passed this time, and the EMA validation loss then
    s = next((m for m in steps if m["seconds"] >= minutes * 60), steps[-1])
    v = [m for m in vals if m["step"] <= s["step"]]
    return s["step"], (v[-1]["val_loss_ema"] if v else float("nan"))

cfg = json.load(open(rows[-1].split(":", 1)[1]))["cfg"]  # the model's sample_cfg, eval's default
out = ["# Quality against training time (the main job's default model)", "",
       f"Produced by `scripts/training_curve.sh` on {datetime.date.today()} from `{run}`: one run, EMA",
       f"snapshots scored by `diffuse eval` (strict mode, 300 prompts, 20 Euler steps, CFG {cfg:g});",
       "steps are those reached by the snapshot's time; validation loss is the EMA's last one before it.", "",
       "| minutes | steps | EMA val loss | single | colours | counting | two obj. | position | colour attr. | **overall** | held-out |",
       "|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    label, path = r.split(":", 1)
    e = json.load(open(path))
    minutes = steps[-1]["seconds"] / 60 if label == "final" else float(label)
    step, val = at(minutes)
    scores = " | ".join(f"{e['categories'][c]['score']:.2f}" for c in cats)
    out.append(f"| {minutes:.0f} | {step} | {val:.4f} | {scores} | **{e['overall']:.3f}** | {e['held_out_overall']:.3f} |")
open(doc, "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
