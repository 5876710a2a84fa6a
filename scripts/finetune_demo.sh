#!/usr/bin/env bash
# docs/finetune.md's demonstration: the main job's shapes model fine-tuned with LoRA on an image
# folder of one category (`diffuse shapes dataset --category`, a seed the model never saw), at
# several ranks; each LoRA is scored by `diffuse eval` (strict, the 300 built-in prompts) beside
# the base, so the table shows the category's gain and what the others lost. Writes docs/finetune_demo.md.
#   BASE=out/shapes bash scripts/finetune_demo.sh    (the model of `bash scripts/main_job.sh`)
#   CATEGORY=position RANKS="4 16 64" STEPS=600 COUNT=500 LR=1e-3 BATCH=32 TARGETS=attention
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DIFFUSE_BUILD_DIR:-$root/build}
base=${BASE:-$root/out/shapes}
category=${CATEGORY:-position}
ranks=${RANKS:-4 16 64}
steps=${STEPS:-600}
count=${COUNT:-500}
lr=${LR:-1e-3}
batch=${BATCH:-32}
targets=${TARGETS:-attention}
work=${WORK:-$root/out/finetune_demo}
doc=${DOC:-$root/docs/finetune_demo.md}
diffuse=$build/bin/diffuse
[ -e "$base/state.json" ] || { echo "finetune_demo: no trained model in $base (run scripts/main_job.sh)" >&2; exit 2; }
rm -rf "$work" && mkdir -p "$work"
"$diffuse" shapes dataset --category "$category" --count "$count" --seed 7 --out "$work/data"
"$diffuse" eval --checkpoint "$base" --out "$work/eval_base" > "$work/eval_base.txt"
for r in $ranks; do
  "$diffuse" train --init "$base" --data "$work/data" --out "$work/lora_r$r" --lora-rank "$r" \
    --lora-targets "$targets" --steps "$steps" --batch "$batch" --lr "$lr" --checkpoint-every 0 2> "$work/train_r$r.log" \
    | tee "$work/train_r$r.txt"
  "$diffuse" eval --checkpoint "$base" --lora "$work/lora_r$r/lora.safetensors" --out "$work/eval_r$r" > "$work/eval_r$r.txt"
done
python3 - "$work" "$doc" "$category" "$count" "$steps" "$batch" "$lr" "$targets" $ranks <<'PY'
import json, sys, re
work, doc, category, count, steps, batch, lr, targets, *ranks = sys.argv[1:]
def load(name):
    return json.load(open(f"{work}/{name}/eval.json"))
cats = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
def row(label, e, extra=""):
    c = e["categories"]
    return "| " + label + " | " + " | ".join(f"{c[k]['score']:.3f}" for k in cats) + f" | {e['overall']:.3f} | {extra} |"
lines = [f"Base: the main job's model; LoRA data: {count} `{category}` images (`diffuse shapes dataset --category "
         f"{category} --seed 7`), {steps} steps of batch {batch}, lr {lr}, targets `{targets}`, alpha = rank. "
         "Strict scores over the 300 built-in prompts (`diffuse eval`, same seeds for every row).", "",
         "| model | " + " | ".join(cats) + " | overall | fit loss (start -> end) |",
         "|---|" + "---|" * (len(cats) + 2)]
lines.append(row("base", load("eval_base")))
for r in ranks:
    out = open(f"{work}/train_r{r}.txt").read()
    m = re.search(r"fit loss ([0-9.]+) -> ([0-9.]+)", out)
    lines.append(row(f"+ LoRA rank {r}", load(f"eval_r{r}"), f"{m.group(1)} -> {m.group(2)}"))
open(doc, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
