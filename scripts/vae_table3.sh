#!/usr/bin/env bash
# A small reproduction of the SD3 paper's Table 3 trend (more latent channels reconstruct better)
# on the shapes world: autoencoders with 4, 8 and 16 latent channels, same width, same training
# budget, held-out PSNR and SSIM written to docs/vae_table3.md.
#   bash scripts/vae_table3.sh              (1500 steps per model, ~8 min each on 2 cores)
#   STEPS=3000 bash scripts/vae_table3.sh   (a step budget is the same on a busy machine)
#   MINUTES=5 bash scripts/vae_table3.sh    (a wall-clock budget instead)
#   FACTOR=16 bash scripts/vae_table3.sh    (16x downsampling, 2 x 2 latents, ~0.3 s a step: the latent becomes the
#                                            bottleneck; writes docs/vae_table3_f16.md)
#   FACTOR=32 bash scripts/vae_table3.sh    (32x, one latent vector per image: writes docs/vae_table3_f32.md)
#   KL=0.003 bash scripts/vae_table3.sh     (KL weight, default 1e-6; another weight writes docs/vae_table3[_f16|_f32]_kl<KL>.md)
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
if [ "$kl" != 1e-6 ]; then doc=${doc%.md}_kl$kl.md; out=${out}_kl$kl; fi
mkdir -p "$out"
echo "{\"model\": {\"ch_mult\": [$mult]}, \"kl_weight\": $kl}" > "$out/config.json"
"$root/scripts/install_deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" --target diffuse_cli
for c in 4 8 16; do
  "$build/bin/diffuse" vae train --config "$out/config.json" "${budget[@]}" --z-channels "$c" --seed 0 --out "$out/z$c"
done
{
  echo "# Latent channels vs reconstruction on the shapes world (SD3 paper, Table 3 trend)"
  echo
  echo "Same architecture (width 32, multipliers $mult, one block per level, ${factor}x downsampling),"
  echo "same budget ($what of training each, batch 32, AdamW 1e-3 with cosine decay to zero, precision auto,"
  echo "L1 + $kl x KL (mean over latent numbers)), 32x32 images; PSNR/SSIM of mean-latent reconstructions of 64 held-out images."
  echo "Produced by \`FACTOR=$factor KL=$kl STEPS=$steps MINUTES=$minutes bash scripts/vae_table3.sh\` on $(date -u +%Y-%m-%d)."
  echo
  echo "| latent channels | steps | minutes | precision | PSNR (dB) | SSIM |"
  echo "| --- | --- | --- | --- | --- | --- |"
  for c in 4 8 16; do
    python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("| %s | %d | %.1f | %s | %.2f | %.4f |" % (sys.argv[2], m["steps"], m["seconds"] / 60, m.get("precision", "bf16"), m["psnr"], m["ssim"]))' \
      "$out/z$c/metrics.json" "$c"
  done
} > "$out/table.md"
cat "$out/table.md" > "$doc"
cat "$doc"
