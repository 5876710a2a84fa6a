#!/usr/bin/env bash
# A small reproduction of the SD3 paper's Table 3 trend (more latent channels reconstruct better)
# on the shapes world: autoencoders with 4, 8 and 16 latent channels, same width, same training
# budget, PSNR and SSIM written to docs/vae_table3_g8.md (the default's name; see NORM_GROUPS).
#   bash scripts/vae_table3.sh              (1500 steps per model, ~6 min each on 2 cores with the batch split)
#   STEPS=3000 bash scripts/vae_table3.sh   (a step budget is the same on a busy machine)
#   MINUTES=5 bash scripts/vae_table3.sh    (a wall-clock budget instead)
#   FACTOR=16 bash scripts/vae_table3.sh    (16x downsampling, 2 x 2 latents, ~0.3 s a step: the latent becomes the
#                                            bottleneck; writes docs/vae_table3_f16.md)
#   FACTOR=32 bash scripts/vae_table3.sh    (32x, one latent vector per image: writes docs/vae_table3_f32.md)
#   KL=0.003 bash scripts/vae_table3.sh     (KL weight, default 1e-6; another weight writes docs/vae_table3[_f16|_f32]_kl<KL>.md)
#   REUSE=1 ...                             (keep models whose metrics.json exists: only the missing ones train)
#   POSTERIOR=mean ...                      (decode the posterior mean in training, not a sample: a deterministic
#                                            autoencoder, an ablation; writes docs/vae_table3[...]_mean.md)
#   SEEDS="0 1 2" bash scripts/vae_table3.sh (one model per channel count and seed; the table gives each seed and the mean:
#                                            seeds of one config differed by 3-7 dB at 1500 steps with 32 groups)
#   NORM_GROUPS=32 ...                      (GroupNorm groups, default 8 as the shapes preset: 4 channels a group at the
#                                            first level, as SD3's 32 at width 128; the tables before 2026-11-29 (later)
#                                            used 32, which normalises every channel alone: docs/vae_table3[...].md;
#                                            another count writes docs/vae_table3[...]_g<N>.md)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DIFFUSE_BUILD_DIR:-$root/build}
steps=${STEPS:-1500}
minutes=${MINUTES:-0}
if [ "$minutes" != 0 ]; then budget=(--minutes "$minutes"); what="$minutes minutes"
else budget=(--steps "$steps"); what="$steps steps"; fi
factor=${FACTOR:-8}
case "$factor" in
  8) mult="1, 2, 2, 2"; doc=$root/docs/vae_table3.md; out=$root/out/vae_table3 ;;
  16) mult="1, 2, 2, 2, 2"; doc=$root/docs/vae_table3_f16.md; out=$root/out/vae_table3_f16 ;;
  32) mult="1, 2, 2, 2, 2, 2"; doc=$root/docs/vae_table3_f32.md; out=$root/out/vae_table3_f32 ;;
  *) echo "vae_table3: FACTOR must be 8, 16 or 32" >&2; exit 2 ;;
esac
kl=${KL:-1e-6}
posterior=${POSTERIOR:-sample}
case "$posterior" in sample|mean) ;; *) echo "vae_table3: POSTERIOR must be sample or mean" >&2; exit 2 ;; esac
groups=${NORM_GROUPS:-8}
case "$groups" in 1|2|4|8|16|32) ;; *) echo "vae_table3: NORM_GROUPS must divide the width 32 (1, 2, 4, 8, 16 or 32)" >&2; exit 2 ;; esac
read -r -a seeds <<< "${SEEDS:-0}"
if [ "$kl" != 1e-6 ]; then doc=${doc%.md}_kl$kl.md; out=${out}_kl$kl; fi
if [ "$posterior" != sample ]; then doc=${doc%.md}_$posterior.md; out=${out}_$posterior; fi
if [ "$groups" != 32 ]; then doc=${doc%.md}_g$groups.md; out=${out}_g$groups; fi  # 32: the earlier tables' names
mkdir -p "$out"
echo "{\"model\": {\"ch_mult\": [$mult], \"norm_groups\": $groups}, \"kl_weight\": $kl, \"posterior\": \"$posterior\"}" > "$out/config.json"
"$root/scripts/install_deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" --target diffuse_cli
for s in "${seeds[@]}"; do
  for c in 4 8 16; do
    if [ "${REUSE:-0}" = 1 ] && [ -f "$out/z${c}_s$s/metrics.json" ]; then continue; fi
    "$build/bin/diffuse" vae train --config "$out/config.json" "${budget[@]}" --z-channels "$c" --seed "$s" --out "$out/z${c}_s$s"
  done
done
{
  echo "# Latent channels vs reconstruction on the shapes world (SD3 paper, Table 3 trend)"
  echo
  echo "Same architecture (width 32, multipliers $mult, one block per level, ${factor}x downsampling, GroupNorm($groups)),"
  echo "same budget ($what of training each, batch 32, AdamW 1e-3 with cosine decay to zero, precision auto,"
  echo "L1 + $kl x KL (mean over latent numbers)), decoder trained on the posterior $posterior, 32x32 images, seeds ${seeds[*]}; PSNR/SSIM of mean-latent reconstructions"
  echo "of 64 unseen images of the training distribution (the same for every seed), and of 64 images of the held-out"
  echo "colour-shape combinations (never trained on)."
  echo "Produced by \`FACTOR=$factor KL=$kl POSTERIOR=$posterior NORM_GROUPS=$groups STEPS=$steps MINUTES=$minutes SEEDS=\"${seeds[*]}\" bash scripts/vae_table3.sh\` on $(date -u +%Y-%m-%d)."
  echo
  python3 - "$out" "${seeds[@]}" <<'PY'
import json, sys
out, seeds = sys.argv[1], sys.argv[2:]
print("| latent channels | seed | steps | minutes | precision | PSNR (dB) | SSIM | held-out combinations PSNR / SSIM |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for c in (4, 8, 16):
    ms = [json.load(open("%s/z%d_s%s/metrics.json" % (out, c, s))) for s in seeds]
    for s, m in zip(seeds, ms):
        print("| %d | %s | %d | %.1f | %s | %.2f | %.4f | %.2f / %.4f |" % (c, s, m["steps"], m["seconds"] / 60, m["precision"],
              m["psnr"], m["ssim"], m["psnr_held_out"], m["ssim_held_out"]))
    if len(ms) > 1:
        mean = lambda k: sum(m[k] for m in ms) / len(ms)
        print("| **%d** | mean | | | | **%.2f** (%.2f-%.2f) | **%.4f** | %.2f / %.4f |" % (c, mean("psnr"), min(m["psnr"] for m in ms),
              max(m["psnr"] for m in ms), mean("ssim"), mean("psnr_held_out"), mean("ssim_held_out")))
PY
} > "$out/table.md"
cat "$out/table.md" > "$doc"
cat "$doc"
