#!/usr/bin/env bash
# docs/dpo.md's measurement: pairs from the main job's shapes model (`diffuse pairs`), DPO with
# LoRA at several betas, and the supervised comparison (a LoRA fine-tuned on the chosen images
# alone, same rank, same minutes); each scored by `diffuse eval` (strict, the 300 built-in prompts,
# the same seeds) beside the base. Writes docs/dpo_results.md.
#   BASE=out/shapes bash scripts/dpo_experiment.sh    (the model of `bash scripts/main_job.sh`)
#   PROMPTS=1000 SAMPLES=4 BETAS="1000 5000 20000" MINUTES=5 LR=5e-4 BATCH=16 RANK=128
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DIFFUSE_BUILD_DIR:-$root/build}
base=${BASE:-$root/out/shapes}
prompts=${PROMPTS:-1000}
samples=${SAMPLES:-4}
betas=${BETAS:-1000 5000 20000}
minutes=${MINUTES:-5}
lr=${LR:-5e-4}
batch=${BATCH:-16}
rank=${RANK:-128}
work=${WORK:-$root/out/dpo_experiment}
doc=${DOC:-$root/docs/dpo_results.md}
diffuse=$build/bin/diffuse
[ -e "$base/state.json" ] || { echo "dpo_experiment: no trained model in $base (run scripts/main_job.sh)" >&2; exit 2; }
rm -rf "$work" && mkdir -p "$work"
start=$(date +%s)
"$diffuse" pairs --checkpoint "$base" --out "$work/pairs" --prompts "$prompts" --samples "$samples" --seed 1 | tee "$work/pairs.txt"
pair_seconds=$(( $(date +%s) - start ))
"$diffuse" eval --checkpoint "$base" --out "$work/eval_base" > "$work/eval_base.txt"
for b in $betas; do
  "$diffuse" dpo --init "$base" --pairs "$work/pairs/pairs.jsonl" --out "$work/dpo_b$b" --beta "$b" --lora-rank "$rank" \
    --minutes "$minutes" --batch "$batch" --lr "$lr" --checkpoint-every 0 2> "$work/dpo_b$b.log" | tee "$work/dpo_b$b.txt"
  "$diffuse" eval --checkpoint "$work/dpo_b$b" --out "$work/eval_b$b" > "$work/eval_b$b.txt"
done
# The supervised comparison: the chosen images with their prompts as an image folder.
python3 - "$work" <<'PY'
import json, os, shutil, sys
work = sys.argv[1]
os.makedirs(f"{work}/chosen", exist_ok=True)
for i, line in enumerate(open(f"{work}/pairs/pairs.jsonl")):
    p = json.loads(line)
    shutil.copy(f"{work}/pairs/{p['chosen']}", f"{work}/chosen/{i:05d}.png")
    open(f"{work}/chosen/{i:05d}.txt", "w").write(p["prompt"])
PY
"$diffuse" train --init "$base" --data "$work/chosen" --out "$work/sft" --lora-rank "$rank" --minutes "$minutes" \
  --batch "$((2 * batch))" --lr "$lr" --checkpoint-every 0 2> "$work/sft.log" | tee "$work/sft.txt"
"$diffuse" eval --checkpoint "$work/sft" --out "$work/eval_sft" > "$work/eval_sft.txt"
python3 - "$root/data/shapes_eval_prompts.json" > "$work/sheet_prompts.txt" <<'PY'
import json, sys
prompts = json.load(open(sys.argv[1]))
for cat in ["two_object", "counting", "position", "color_attr"]:
    for p in [p for p in prompts if p["category"] == cat][:2]:
        print(p["prompt"])
PY
python3 - "$work" "$doc" "$prompts" "$samples" "$minutes" "$lr" "$batch" "$rank" "$pair_seconds" $betas <<'PY'
import json, sys
work, doc, prompts, samples, minutes, lr, batch, rank, pair_seconds, *betas = sys.argv[1:]
cats = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
def load(name):
    return json.load(open(f"{work}/{name}/eval.json"))
def row(label, e, extra=""):
    c = e["categories"]
    return ("| " + label + " | " + " | ".join(f"{c[k]['score']:.3f}" for k in cats) + f" | {e['overall']:.3f} | "
            + f"{e['held_out_overall']:.3f} | {extra} |")
pairs = sum(1 for _ in open(f"{work}/pairs/pairs.jsonl"))
lines = [f"Base: the main job's model. Pairs: `diffuse pairs --prompts {prompts} --samples {samples} --seed 1` "
         f"({pairs} pairs, {pair_seconds} s). DPO and the supervised LoRA (on the chosen images alone): rank {rank}, "
         f"{minutes} minutes each, lr {lr}, DPO batch {batch} pairs, supervised batch {2 * int(batch)} images. Strict "
         "scores over the 300 built-in prompts (`diffuse eval`, same seeds for every row).", "",
         "| model | " + " | ".join(cats) + " | overall | held-out overall | run |",
         "|---|" + "---|" * (len(cats) + 3)]
lines.append(row("base", load("eval_base")))
for b in betas:
    out = open(f"{work}/dpo_b{b}.txt").read().strip()
    lines.append(row(f"+ DPO beta {b}", load(f"eval_b{b}"), out.split(";")[0]))
lines.append(row("+ supervised LoRA", load("eval_sft"), open(f"{work}/sft.txt").read().strip().split(";")[0]))
best = max(betas, key=lambda b: load(f"eval_b{b}")["overall"])
open(f"{work}/best_beta", "w").write(best)
lines += ["", f"Sheet (docs/dpo_sheet_base.png above, docs/dpo_sheet_dpo.png below: beta {best}, the best row): the "
          "first two evaluation prompts of two_object, counting, position and color_attr, seed 0, the same noise:", ""]
lines += ["- " + p for p in open(f"{work}/sheet_prompts.txt").read().splitlines()]
lines += ["", "![base](dpo_sheet_base.png)", "", "![DPO](dpo_sheet_dpo.png)"]
open(doc, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
# The sheet: the same prompts and seed through the base and the best DPO run.
sheet_args=()
while IFS= read -r p; do sheet_args+=(--prompt "$p"); done < "$work/sheet_prompts.txt"
"$diffuse" sample --checkpoint "$base" "${sheet_args[@]}" --seed 0 --columns 8 --out "$(dirname "$doc")/dpo_sheet_base.png"
"$diffuse" sample --checkpoint "$work/dpo_b$(cat "$work/best_beta")" "${sheet_args[@]}" --seed 0 --columns 8 \
  --out "$(dirname "$doc")/dpo_sheet_dpo.png"
