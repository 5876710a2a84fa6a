#!/usr/bin/python3
"""End-to-end parity of `diffuse generate` with the SD3.5 reference pipeline (Stability-AI/sd3.5,
sd3_infer.py), on tiny random weights in the released files' key layouts.

The script builds a tiny configuration of the whole stack with the reference's own modules (CLIP-L,
CLIP-G, T5 with d_model 4096 since the reference pads CLIP features to 4096 columns, MM-DiT, a
narrow SD3 VAE), writes it as the reference reads it (an SD3 file with model.diffusion_model.* and
first_stage_model.*, and clip_l / clip_g / t5xxl .safetensors in a model folder), then for each case
runs the reference's SD3Inferencer (load, get_empty_latent or _image_to_latent, get_cond for the
prompt and for "", do_sampling, the VAE's decode and vae_decode: the steps of its gen_image for one
prompt with a fixed seed) and `diffuse generate` on the same files, prompt and seed, and compares
the final latent and the decoded image in float32 (largest difference over the largest magnitude of
the reference's values) and the 8-bit images.

ControlNet cases use tiny ControlNets made with the reference's dit_embedder.ControlNetEmbedder,
written as the released files are (embedders under diffusers' names, a control_type tensor), and a
control image of another size than the output (so both resize it). One departure: the reference
tells its 8B ControlNets from 2B ones by a pooled-text input of exactly 2048 (SD3's pooled width);
the tiny stack's pooled width is 256, so after loading the script sets the reference's
using_8b_controlnet flag by the same test against that width, which is diffuse's rule.

Needs /usr/bin/python3 with Debian's python3-torch, python3-numpy, python3-pil, python3-tqdm and
python3-sentencepiece; einops, safetensors, transformers and fire are not packaged, so ./standins
has small stand-ins for what the reference uses of them. The reference runs on CUDA in float16;
here `.cuda()` and `.half()` are identities and its modules are built on the CPU in float32, and
PyTorch 1.13 has no scaled_dot_product_attention, so its textbook definition stands in. Nothing of
the reference is copied or changed on disk: its tree is put on sys.path.

  /usr/bin/python3 tools/reference_parity/sd3_e2e.py --reference /path/to/sd3.5 \\
      --diffuse build/tools/diffuse/diffuse --clip-vocab ../shared/testdata/tokenizers/bpe_simple_vocab_16e6.txt.gz \\
      --work /tmp/sd3_e2e --report /tmp/sd3_e2e/report.json
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPT = "a red circle left of a blue square"
WIDTH, HEIGHT = 96, 64  # non-square: 12 x 8 latent, 6 x 4 patches
BOUND = 2e-5
# The dtype the reference runs in: float32 for the comparison, float64 once more per case to
# measure how far float32 rounding alone moves the reference itself.
REFERENCE = {"dtype": torch.float32}


def textbook_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
    """softmax(Q K^T / sqrt(d) + mask) V: what torch 2's scaled_dot_product_attention computes."""
    assert dropout_p == 0.0 and not is_causal
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
    return torch.softmax(s, dim=-1) @ v


def import_reference(reference):
    sys.path.insert(0, os.path.join(HERE, "standins"))
    sys.path.insert(1, reference)
    if not hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        torch.nn.functional.scaled_dot_product_attention = textbook_attention
    # On the CPU in REFERENCE["dtype"]: where the reference moves a tensor to CUDA or to float16.
    to_dtype = lambda self, *a, **k: self.to(REFERENCE["dtype"]) if self.is_floating_point() else self
    torch.Tensor.cuda = to_dtype
    torch.Tensor.half = to_dtype
    torch.nn.Module.cuda = lambda self, *a, **k: self
    module_to = torch.nn.Module.to

    def module_to_cpu(self, *a, **k):  # SD3.__init__ moves the ControlNet with .to("cuda")
        cuda = lambda d: isinstance(d, (str, torch.device)) and str(d).startswith("cuda")
        a = tuple("cpu" if cuda(x) else x for x in a)
        if cuda(k.get("device")):
            k["device"] = "cpu"
        return module_to(self, *a, **k)

    torch.nn.Module.to = module_to_cpu
    # SDVAE.encode's posterior draw: the float32 stream whatever the dtype (float64 draws differ).
    randn_like = torch.randn_like
    torch.randn_like = lambda t, **k: randn_like(t, dtype=torch.float32).to(t.dtype)
    import dit_embedder
    import mmditx
    import other_impls
    import sd3_impls
    import sd3_infer

    # Built on the CPU in float32 (the reference asks for CUDA and float16).
    base_init = sd3_impls.BaseModel.__init__

    def base_model_on_cpu(self, *a, **k):
        k["device"], k["dtype"] = "cpu", REFERENCE["dtype"]
        base_init(self, *a, **k)

    sd3_impls.BaseModel.__init__ = base_model_on_cpu
    load_into = sd3_infer.load_into
    def load_on_cpu(ckpt, model, prefix, device, dtype=None, remap=None):
        model.to(REFERENCE["dtype"])  # Tensor.set_ needs the module's dtype to be the tensors'
        load_into(ckpt, model, prefix, "cpu", REFERENCE["dtype"], remap)

    sd3_infer.load_into = load_on_cpu
    sd3_infer.VAE.__init__.__defaults__ = (torch.float32,)

    # A narrow VAE: the SD3 VAE's structure (levels 1, 2, 4, 4; 2 residual blocks; 16 latent
    # channels) at base width 32 instead of 128.
    def narrow_vae(self, dtype=torch.float32, device=None):
        torch.nn.Module.__init__(self)
        self.encoder = sd3_impls.VAEEncoder(ch=32, dtype=dtype, device=device)
        self.decoder = sd3_impls.VAEDecoder(ch=32, dtype=dtype, device=device)

    sd3_impls.SDVAE.__init__ = narrow_vae
    # Tiny text encoders (the reference reads these module-level configs when it loads).
    sd3_infer.CLIPL_CONFIG = {"hidden_act": "quick_gelu", "hidden_size": 128, "intermediate_size": 256,
                              "num_attention_heads": 2, "num_hidden_layers": 3}
    sd3_infer.CLIPG_CONFIG = {"hidden_act": "gelu", "hidden_size": 128, "intermediate_size": 256,
                              "num_attention_heads": 2, "num_hidden_layers": 3}
    sd3_infer.T5_CONFIG = {"d_ff": 64, "d_model": 4096, "num_heads": 2, "num_layers": 2, "vocab_size": 64}
    return mmditx, other_impls, sd3_impls, sd3_infer, dit_embedder


def module_heads(module):
    return next(m.num_heads for m in module.modules() if hasattr(m, "num_heads") and hasattr(m, "relative_attention_bias"))


def randomize(module, seed):
    """Weights that make every part matter: matrices N(0, 1/fan_in), norms' scales near 1, other
    vectors and tables N(0, 0.1..0.5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()) + sorted(module.named_buffers()):
            if not p.is_floating_point():
                continue
            owner = name.split(".")[-2] if "." in name else ""
            table = name == "pos_embed" or "embed_tokens" in name or name.endswith("embedding.weight") or "relative_attention_bias" in name
            if table:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
                if name.endswith("SelfAttention.q.weight"):  # T5 does not scale its scores: its init does (Mesh TF)
                    p.div_(math.sqrt(p.shape[0] / module_heads(module)))
            elif ("norm" in owner or owner.startswith("ln_")) and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


@torch.no_grad()  # as the reference builds its modules (main() is no_grad)
def write_models(mods, work, clip_vocab):
    mmditx, other_impls, sd3_impls, sd3_infer, dit_embedder = mods
    from safetensors import save_file

    folder = os.path.join(work, "models")
    tok = os.path.join(work, "tokenizers")
    os.makedirs(folder, exist_ok=True)
    os.makedirs(tok, exist_ok=True)
    shutil.copy(clip_vocab, os.path.join(tok, "bpe_simple_vocab_16e6.txt.gz"))
    import sentencepiece

    text = os.path.join(work, "words.txt")
    with open(text, "w") as f:
        for i in range(200):
            f.write(f"{PROMPT} and {i % 7} green triangles above the yellow star\n")
    sentencepiece.SentencePieceTrainer.train(input=text, model_prefix=os.path.join(tok, "spiece"), vocab_size=36,
                                             pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    clip_l = other_impls.SDClipModel(layer="hidden", layer_idx=-2, device="cpu", dtype=torch.float32,
                                     layer_norm_hidden_state=False, return_projected_pooled=False,
                                     textmodel_json_config=sd3_infer.CLIPL_CONFIG)
    clip_g = other_impls.SDXLClipG(sd3_infer.CLIPG_CONFIG, device="cpu", dtype=torch.float32)
    t5 = other_impls.T5XXLModel(sd3_infer.T5_CONFIG, device="cpu", dtype=torch.float32)
    for i, (name, m) in enumerate([("clip_l", clip_l), ("clip_g", clip_g), ("t5xxl", t5)]):
        randomize(m.transformer, 100 + i)
        save_file(dict(m.transformer.state_dict()), os.path.join(folder, name + ".safetensors"))

    models = {}
    # sd35l: SD3.5-large's structure (RMS QK-norm, no MMDiT-X blocks) at depth 6, hidden 384.
    for name, depth, qk_norm, x_attn in [("sd3", 2, None, []), ("sd35m", 3, "rms", [0]), ("sd35l", 6, "rms", [])]:
        dit = mmditx.MMDiTX(input_size=None, pos_embed_scaling_factor=None, pos_embed_offset=None, pos_embed_max_size=16,
                            patch_size=2, in_channels=16, depth=depth, num_patches=256, adm_in_channels=256,
                            context_embedder_config={"target": "torch.nn.Linear",
                                                     "params": {"in_features": 4096, "out_features": 64 * depth}},
                            qk_norm=qk_norm, x_block_self_attn_layers=x_attn, device="cpu", dtype=torch.float32)
        randomize(dit, 7 + depth)
        vae = sd3_impls.SDVAE(dtype=torch.float32, device="cpu")
        randomize(vae, 3)
        tensors = {"model.diffusion_model." + k: v for k, v in dit.state_dict().items()}
        tensors.update({"first_stage_model." + k: v for k, v in vae.state_dict().items()})
        path = os.path.join(folder, f"tiny_{name}.safetensors")
        save_file(tensors, path)
        models[name] = path
    # ControlNets for sd35l: the 8B form (pooled text input, blocks in sequence) as canny and blur,
    # and the 2B form (embedded pooled text, its own patch embedding, blocks side by side).
    released = {v: k for k, v in sd3_infer.CONTROLNET_MAP.items()}
    for name, pooled, layers, control_type, own_patch_embed in [("cn8_canny", 256, 3, 1, False), ("cn8_blur", 256, 3, 0, False),
                                                                ("cn2", 384, 2, 0, True)]:
        net = dit_embedder.ControlNetEmbedder(img_size=None, patch_size=2, in_chans=16, attention_head_dim=64,
                                              num_attention_heads=6, pooled_projection_size=pooled, num_layers=layers,
                                              device="cpu", dtype=torch.float32)
        randomize(net, 40 + layers + control_type)
        tensors = {released.get(k, k): v for k, v in net.state_dict().items()
                   if own_patch_embed or not k.startswith("x_embedder.")}
        tensors["control_type"] = torch.tensor([control_type], dtype=torch.int32)
        path = os.path.join(folder, name + ".safetensors")
        save_file(tensors, path)
        models[name] = path
    return folder, tok, models


def init_image(work):
    from PIL import Image

    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([x * 255 // WIDTH, y * 255 // HEIGHT, ((x // 16 + y // 16) % 2) * 200 + 30], -1).astype(np.uint8)
    path = os.path.join(work, "init.png")
    Image.fromarray(rgb).save(path)
    return path


def control_image(work):
    """Edges on black at 120 x 84, not the output size: both sides resize it (Lanczos)."""
    from PIL import Image

    y, x = np.mgrid[0:84, 0:120]
    edge = ((np.abs((x - 60) ** 2 + (y - 42) ** 2 - 900) < 60) | (x % 37 == 0) | (y == 20)).astype(np.uint8) * 255
    path = os.path.join(work, "control.png")
    Image.fromarray(np.stack([edge, edge, edge], -1)).save(path)
    return path


CASES = [
    {"name": "euler", "model": "sd3", "sampler": "euler", "steps": 4, "cfg": 4.5},
    {"name": "dpmpp_2m", "model": "sd3", "sampler": "dpmpp_2m", "steps": 4, "cfg": 4.5},
    {"name": "euler_slg", "model": "sd35m", "sampler": "euler", "steps": 10, "cfg": 4.0,
     "slg": {"scale": 2.5, "start": 0.01, "end": 0.20, "layers": [1]}},
    {"name": "dpmpp_2m_slg", "model": "sd35m", "sampler": "dpmpp_2m", "steps": 10, "cfg": 4.0,
     "slg": {"scale": 2.5, "start": 0.01, "end": 0.20, "layers": [1]}},
    {"name": "euler_28", "model": "sd3", "sampler": "euler", "steps": 28, "cfg": 5.0},
    {"name": "dpmpp_2m_50_slg", "model": "sd35m", "sampler": "dpmpp_2m", "steps": 50, "cfg": 5.0,
     "slg": {"scale": 2.5, "start": 0.01, "end": 0.20, "layers": [1]}},
    {"name": "img2img_euler", "model": "sd3", "sampler": "euler", "steps": 5, "cfg": 4.5, "denoise": 0.6},
    {"name": "img2img_dpmpp_2m_slg", "model": "sd35m", "sampler": "dpmpp_2m", "steps": 10, "cfg": 4.0, "denoise": 0.8,
     "slg": {"scale": 2.5, "start": 0.01, "end": 0.20, "layers": [1]}},
    {"name": "controlnet_8b_canny", "model": "sd35l", "sampler": "euler", "steps": 8, "cfg": 3.5, "controlnet": "cn8_canny"},
    {"name": "controlnet_8b_blur_dpmpp_2m", "model": "sd35l", "sampler": "dpmpp_2m", "steps": 8, "cfg": 3.5,
     "controlnet": "cn8_blur"},
    {"name": "controlnet_2b_slg", "model": "sd35l", "sampler": "euler", "steps": 10, "cfg": 4.0, "controlnet": "cn2",
     "slg": {"scale": 2.5, "start": 0.01, "end": 0.30, "layers": [1]}},
    {"name": "img2img_controlnet_8b_canny", "model": "sd35l", "sampler": "euler", "steps": 8, "cfg": 3.5, "denoise": 0.7,
     "controlnet": "cn8_canny"},
]
SEED, POSTERIOR_SEED, SHIFT = 23, 5, 3.0


@torch.no_grad()  # as sd3_infer.py main()
def run_reference(mods, case, model, folder, init, control=None, controlnet=None):
    sd3_infer = mods[3]
    inf = sd3_infer.SD3Inferencer()
    inf.load(model=model, vae=None, shift=SHIFT, controlnet_ckpt=controlnet, model_folder=folder, text_encoder_device="cpu",
             verbose=False)
    if controlnet:  # the 8B test by the model's pooled width, not the literal 2048 (see the top)
        cm = inf.sd3.model.control_model
        eight = cm.y_embedder.mlp[0].in_features == inf.sd3.model.diffusion_model.y_embedder.mlp[0].in_features
        inf.sd3.using_8b_controlnet = cm.using_8b_controlnet = eight
    # SDVAE.encode draws from the posterior with torch's global generator: seeded here so that
    # diffuse can draw the same (--posterior-seed); the init image draws first, then the control image.
    torch.manual_seed(POSTERIOR_SEED)
    if "denoise" in case:
        latent = inf._image_to_latent(init, WIDTH, HEIGHT)
    else:
        latent = inf.get_empty_latent(1, WIDTH, HEIGHT, SEED, "cpu")
    controlnet_cond = None
    if controlnet:  # as gen_image prepares it
        using_2b = not inf.sd3.using_8b_controlnet
        control_type = int(inf.sd3.model.control_model.control_type.item())
        controlnet_cond = inf._image_to_latent(control, WIDTH, HEIGHT, using_2b, control_type)
    neg = inf.get_cond("")
    cond = inf.get_cond(PROMPT)
    sampled = inf.do_sampling(latent, SEED, cond, neg, case["steps"], case["cfg"], case["sampler"], controlnet_cond,
                              case.get("denoise", 1.0), case.get("slg", {}))
    image = inf.vae.model.decode(sampled).clamp(-1, 1)
    png = np.array(inf.vae_decode(sampled))
    return sampled, image, png


def run_diffuse(exe, case, model, folder, tok, init, work, extra=(), control=None, controlnet=None):
    out = os.path.join(work, case["name"])
    cmd = [exe, "generate", "--model", model, "--clip-l", os.path.join(folder, "clip_l.safetensors"),
           "--clip-g", os.path.join(folder, "clip_g.safetensors"), "--t5", os.path.join(folder, "t5xxl.safetensors"),
           "--tokenizers", tok, "--prompt", PROMPT, "--width", str(WIDTH), "--height", str(HEIGHT),
           "--steps", str(case["steps"]), "--cfg", str(case["cfg"]), "--sampler", case["sampler"], "--shift", str(SHIFT),
           "--seed", str(SEED), "--dtype", "f32", "--t5-length", "0", "--out", out + ".png",
           "--save-tensors", out + ".safetensors"]
    if "slg" in case:
        s = case["slg"]
        cmd += ["--slg-scale", str(s["scale"]), "--skip-layers", ",".join(map(str, s["layers"])),
                "--slg-start", str(s["start"]), "--slg-end", str(s["end"])]
    cmd += list(extra)
    if "denoise" in case:
        cmd += ["--init-img", init, "--strength", str(case["denoise"])]
    if controlnet:
        cmd += ["--controlnet", controlnet, "--control-image", control]
    if "denoise" in case or controlnet:
        cmd += ["--posterior-seed", str(POSTERIOR_SEED)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("diffuse generate failed (" + str(r.returncode) + "):\n" + " ".join(cmd) + "\n" + r.stderr)
    from PIL import Image
    from safetensors import safe_open

    with safe_open(out + ".safetensors", framework="pt") as f:
        latent, image = f.get_tensor("latent"), f.get_tensor("image")
    return latent, image, np.array(Image.open(out + ".png").convert("RGB"))


@torch.no_grad()
def compare_conditioning(mods, exe, model, folder, tok, work):
    """The text conditioning alone: the reference's get_cond against `diffuse encode-text`."""
    inf = mods[3].SD3Inferencer()
    inf.load(model=model, vae=None, shift=SHIFT, controlnet_ckpt=None, model_folder=folder, text_encoder_device="cpu",
             verbose=False)
    out = os.path.join(work, "conditioning.safetensors")
    subprocess.run([exe, "encode-text", "--clip-l", os.path.join(folder, "clip_l.safetensors"), "--clip-g",
                    os.path.join(folder, "clip_g.safetensors"), "--t5", os.path.join(folder, "t5xxl.safetensors"),
                    "--tokenizers", tok, "--prompt", PROMPT, "--prompt", "", "--t5-length", "0", "--out", out],
                   check=True, capture_output=True)
    from safetensors import safe_open

    with safe_open(out, framework="pt") as f:
        context, pooled = f.get_tensor("context"), f.get_tensor("pooled")
    rows = {}
    for i, text in enumerate([PROMPT, ""]):
        c, p = inf.get_cond(text)
        rows["prompt" if text else "empty prompt"] = {
            "clip_context_rel": relative(context[i, :77], c[0, :77]), "t5_context_rel": relative(context[i, 77:], c[0, 77:]),
            "pooled_rel": relative(pooled[i], p[0])}
    return rows


def relative(ours, ref):
    return float((ours - ref).abs().max() / ref.abs().max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True, help="the Stability-AI/sd3.5 tree (a checkout or an exported commit)")
    ap.add_argument("--diffuse", required=True, help="the diffuse program")
    ap.add_argument("--clip-vocab", required=True, help="bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--work", default="/tmp/sd3_e2e", help="scratch folder (weights, outputs)")
    ap.add_argument("--report", help="write the results as JSON here")
    ap.add_argument("--reference-commit", help="the reference's commit, for the report (default: git rev-parse in --reference)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--diffuse-args", default="", help="more options for diffuse generate, e.g. '--weight-layout row'")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(a.work, exist_ok=True)
    os.environ["DIFFUSE_PARITY_TOKENIZERS"] = os.path.join(a.work, "tokenizers")
    mods = import_reference(os.path.abspath(a.reference))
    t0 = time.time()
    folder, tok, models = write_models(mods, a.work, a.clip_vocab)
    init = init_image(a.work)
    control = control_image(a.work)
    conditioning = compare_conditioning(mods, os.path.abspath(a.diffuse), models["sd3"], folder, tok, a.work)
    print("conditioning:", json.dumps(conditioning), flush=True)
    results, worst = [], 0.0
    for case in CASES:
        if a.cases and case["name"] not in a.cases.split(","):
            continue
        model = models[case["model"]]
        cn = models[case["controlnet"]] if "controlnet" in case else None
        REFERENCE["dtype"] = torch.float64
        exact_latent, exact_image, _ = run_reference(mods, case, model, folder, init, control, cn)
        REFERENCE["dtype"] = torch.float32
        ref_latent, ref_image, ref_png = run_reference(mods, case, model, folder, init, control, cn)
        assert ref_latent.dtype == torch.float32 and exact_latent.dtype == torch.float64
        latent, image, png = run_diffuse(os.path.abspath(a.diffuse), case, model, folder, tok, init, a.work,
                                         a.diffuse_args.split(), control, cn)
        if latent.shape != ref_latent.shape or image.shape != ref_image.shape:
            raise RuntimeError(f"{case['name']}: shapes differ: latent {tuple(latent.shape)} vs {tuple(ref_latent.shape)}, "
                               f"image {tuple(image.shape)} vs {tuple(ref_image.shape)}")
        levels = np.abs(png.astype(int) - ref_png.astype(int))
        row = {"case": case["name"], "model": case["model"], "sampler": case["sampler"], "steps": case["steps"],
               "cfg": case["cfg"], "skip_layer_guidance": "slg" in case, "img2img_denoise": case.get("denoise"),
               "controlnet": case.get("controlnet"),
               "latent_rel": relative(latent, ref_latent), "image_rel": relative(image, ref_image),
               # float32 rounding: the reference and diffuse against the reference in float64
               "reference_f32_latent_rel": relative(ref_latent.double(), exact_latent),
               "reference_f32_image_rel": relative(ref_image.double(), exact_image),
               "diffuse_latent_rel_f64": relative(latent.double(), exact_latent),
               "diffuse_image_rel_f64": relative(image.double(), exact_image),
               "latent_scale": float(ref_latent.abs().max()), "image_std": float(ref_image.std()),
               "png_max_level_diff": int(levels.max()), "png_pixels_differing": int((levels > 0).any(-1).sum())}
        if cn:  # how far the ControlNet moves the result: diffuse at strength 0 against the reference
            plain, _, _ = run_diffuse(os.path.abspath(a.diffuse), dict(case, name=case["name"] + "_strength0"), model, folder,
                                      tok, init, a.work, a.diffuse_args.split() + ["--control-strength", "0"], control, cn)
            row["controlnet_effect_latent_rel"] = relative(plain, ref_latent)
        row["pass"] = row["latent_rel"] <= BOUND and row["image_rel"] <= BOUND
        worst = max(worst, row["latent_rel"], row["image_rel"])
        results.append(row)
        print(f"{row['case']:22s} latent {row['latent_rel']:.2e}  image {row['image_rel']:.2e}  png max {row['png_max_level_diff']} "
              f"({row['png_pixels_differing']} px)  {'ok' if row['pass'] else 'FAIL'};  vs float64: reference "
              f"{row['reference_f32_latent_rel']:.1e} / {row['reference_f32_image_rel']:.1e}, diffuse "
              f"{row['diffuse_latent_rel_f64']:.1e} / {row['diffuse_image_rel_f64']:.1e}"
              + (f"; without the ControlNet {row['controlnet_effect_latent_rel']:.1e}" if cn else ""), flush=True)
    report = {"reference": os.path.abspath(a.reference), "bound": BOUND, "prompt": PROMPT, "size": [WIDTH, HEIGHT],
              "seed": SEED, "shift": SHIFT, "conditioning": conditioning, "worst": worst, "seconds": round(time.time() - t0, 1), "cases": results}
    report["reference_commit"] = a.reference_commit or subprocess.run(
        ["git", "-C", a.reference, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    if a.report:
        with open(a.report, "w") as f:
            json.dump(report, f, indent=2)
    print(f"worst {worst:.2e} (bound {BOUND:.0e}); {sum(r['pass'] for r in results)}/{len(results)} cases within it")
    return 0 if all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
