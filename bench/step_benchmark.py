"""Time one SG-RL/SG-KD training step: the reference way vs the project's step, same model, same batch.

Reference way (authors' code, spec/method.md "Making it fast"): captions, label names and class
prompts re-encoded through the text tower every batch, soft targets and the SG-KD inter-similarity
built with a per-sample Python loop, and a full teacher forward (patchify + every block).
Project way: ``ContinualLearner.train_step`` — text features cached per task, the frozen prefix
computed once and shared by student and teacher, soft targets / adjustment as table look-ups.
Both run the same student weights, batch, losses and SGD update; both under the same autocast
(bf16 on CUDA, none on CPU), so the ratio measures the algorithmic changes only.

CPU default (tiny, random weights):  python bench/step_benchmark.py
GPU:  python bench/step_benchmark.py --device cuda --model ViT-B-16 --batch 256
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.sg.learner import ContinualLearner, LearnerConfig  # noqa: E402
from core.sg.losses import clip_contrastive_loss, sg_kd_loss  # noqa: E402
from core.sg.models import split_open_clip_visual  # noqa: E402


def build_models(args):
    import open_clip
    from open_clip.transformer import TextTransformer, VisionTransformer

    torch.manual_seed(0)
    if args.model == "tiny":
        dim = 64
        visual = VisionTransformer(image_size=args.image_size, patch_size=8, width=128, layers=6, heads=4,
                                   mlp_ratio=4.0, output_dim=dim)
        text = TextTransformer(context_length=32, vocab_size=49408, width=128, heads=4, layers=6,
                               output_dim=dim)
        context = 32
        encode_text = text
    else:
        clip = open_clip.create_model(args.model, pretrained=None)
        visual, dim = clip.visual, clip.visual.output_dim
        context = clip.context_length
        encode_text = clip.encode_text
        text = clip
        args.image_size = visual.image_size[0]
    text.eval()
    for p in text.parameters():
        p.requires_grad_(False)
    return visual, encode_text, text, dim, context


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="tiny", help="'tiny' or an open_clip model name, e.g. ViT-B-16")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=20, help="seen classes (half old, half new)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    visual, encode_text, text_module, dim, context = build_models(args)
    text_module.to(dev)
    n, old = args.classes, args.classes // 2
    gen = torch.Generator().manual_seed(0)
    # random token sequences stand in for tokenised "a photo of a {name}." and bare "{name}"
    def tokens(length):
        t = torch.randint(1, 49000, (n, context), generator=gen)
        t[:, length:] = 0
        t[:, length - 1] = 49407  # end-of-text: argmax pooling picks it
        return t.to(dev)
    prompt_tokens, name_tokens = tokens(8), tokens(4)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=gen).to(dev)
    targets = torch.randint(0, n, (args.batch,), generator=gen).to(dev)
    cfg = LearnerConfig(device=str(dev), softness=13.0)
    s = 100.0
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda"
                else contextlib.nullcontext())

    def encode(tok):
        with torch.no_grad(), autocast:
            return F.normalize(encode_text(tok).float(), dim=1)

    # ---------------- reference way
    ref_student = split_open_clip_visual(copy.deepcopy(visual), 1).to(dev).visual
    ref_teacher = copy.deepcopy(ref_student).eval()
    for p in ref_teacher.parameters():
        p.requires_grad_(False)
    ref_params = [p for p in ref_student.parameters() if p.requires_grad]
    ref_opt = torch.optim.SGD(ref_params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def reference_step():
        ref_student.eval()
        ref_student.transformer.resblocks[-1].train()
        W = encode(prompt_tokens)                 # class prompts, every batch
        U = encode(name_tokens)                   # bare label names, every batch
        captions = encode(prompt_tokens[targets])  # one caption per image, every batch
        with autocast:
            out = ref_student(x)
            with torch.no_grad():
                out_old = ref_teacher(x)          # full teacher forward, prefix included
        z = F.normalize(out.float(), dim=1)
        logits = s * z @ W.t()
        loss = clip_contrastive_loss(z, captions, s)
        soft_rows, inter_rows = [], []
        for i in range(len(targets)):             # per-sample loop, as in the reference
            y = int(targets[i])
            soft_rows.append(torch.softmax(cfg.softness * (U @ U[y]), dim=0))
            inter_rows.append(U[y] @ W[:old].t())
        soft_t = torch.stack(soft_rows)
        loss = loss + cfg.lambda_sl * F.kl_div(F.log_softmax(logits, 1), soft_t, reduction="sum") / logits.numel()
        teacher_logits = s * F.normalize(out_old.float(), dim=1) @ W[:old].t()
        loss = loss + cfg.lambda_kd * sg_kd_loss(logits[:, :old], teacher_logits, torch.stack(inter_rows), cfg.T)
        ref_opt.zero_grad(set_to_none=True)
        loss.backward()
        ref_opt.step()
        return loss.detach()

    # ---------------- project way (text encoded once per task, outside the timed step)
    learner = ContinualLearner(split_open_clip_visual(copy.deepcopy(visual), 1), s, cfg)
    task = learner.prepare_task(encode(name_tokens), encode(prompt_tokens), list(range(old, n)), distill=True)
    learner.model.train()

    def project_step():
        return learner.train_step(task, x, targets)["loss"]

    def timeit(fn):
        for _ in range(args.warmup):
            fn().item()
        times = []
        for _ in range(args.steps):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn().item()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    t_ref = timeit(reference_step)
    t_proj = timeit(project_step)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; model: {args.model}; batch {args.batch}; {args.image_size}px; {n} classes "
          f"({old} old); median of {args.steps} steps")
    print(f"reference step: {t_ref * 1000:9.1f} ms  ({args.batch / t_ref:9.1f} img/s)")
    print(f"project step:   {t_proj * 1000:9.1f} ms  ({args.batch / t_proj:9.1f} img/s)")
    print(f"speed-up: {t_ref / t_proj:.2f}x")


if __name__ == "__main__":
    main()
