"""Train (and check) the small ViTs that ship with the app: on synthetic shapes, or on real pictures.

    python -m vit_explain.train --recipe shapes                       # -> assets/models/shapes
    python -m vit_explain.train --recipe cifar10 --data PATH          # -> assets/models/vit-cifar10
    python -m vit_explain.train --data my_pictures/ --out my_model    # any ImageFolder folder or tar
    python -m vit_explain.train --evaluate assets/models/shapes

Real pictures (:func:`train_images`): any data set in the ImageFolder layout, read into memory by
:mod:`vit_explain.imagefolder`; epochs of shuffled, augmented batches (random crop after a 4-pixel
reflect pad, horizontal flip; optionally RandAugment and mixup / CutMix, see
:mod:`vit_explain.augment`); AdamW with a linear warm-up and cosine decay to zero; label
smoothing; a held-out check after every epoch; the model, optimiser and history saved after every
epoch so that running the same command again resumes an interrupted run. At the end: top-1,
per-class accuracy and the confusion matrix of the whole held-out split, written next to the
weights (``evaluation.json``, ``confusion_matrix.csv``). CUDA is used when there is one.

The synthetic shapes (:func:`train`):

Every step draws a fresh batch from :func:`vit_explain.synthetic.sample` (batch ``i`` of a run
with seed ``s`` uses the seed sequence ``[s, i]``), so the data never repeats and a run is fixed
by its seed. The model is this project's own :class:`~vit_explain.ViTForImageClassification`,
optimised with AdamW under a linear warm-up then cosine decay, and saved in the Hugging Face
layout (``config.json``, ``model.safetensors``, ``preprocessor_config.json``) so that
transformers can load it too.

:func:`evaluate` measures what the bundled model promises: its accuracy on fresh images, and how
much of the CLS token's attention rollout (Abnar & Zuidema, 2020) lands on the patches that
overlap the object.

What made the small ViT learn in a CPU budget (each found by a run that stalled without it):
objects brighter than their background (with random contrast the loss sat at chance for
hundreds of steps; see :mod:`vit_explain.synthetic`); clutter ramped in over the first fifth of
the run; position embeddings started at 2-D sine-cosine values rather than noise (about a
quarter fewer steps to the same accuracy); a narrow, shallow model (width 96, 4 layers) trained
for more steps rather than a wider, deeper one for fewer. The defaults reproduce the shipped
model byte for byte: 8,000 steps of 64 pictures, 27 minutes wall-clock on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import repeat

from . import ViTConfig, ViTForImageClassification
from .augment import check_settings, crop_and_flip, mix_batch, rand_augment
from .synthetic import CLASS_NAMES, sample

__all__ = [
    "default_config",
    "images_to_pixel_values",
    "learning_rate",
    "clutter_at",
    "make_optimizer",
    "init_sincos_positions",
    "train_step",
    "train",
    "cls_rollout",
    "evaluate",
    "save_model",
    "load_model",
    "main",
]

#: Seed of the evaluation images; training batches use seed sequences ``[seed, step]``,
#: which never coincide with it.
EVAL_SEED = 12345
# The batch that measures the patch embeddings' spread for the sine-cosine start: a "step" no run reaches.
_PROBE_STEP = 2**32 - 1


def default_config(
    *,
    image_size: int = 64,
    patch_size: int = 8,
    hidden_size: int = 96,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
    intermediate_size: int | None = None,
) -> ViTConfig:
    """The bundled model's architecture: an 8x8 patch grid of a 64-pixel image, 4 layers of width 96."""
    return ViTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        hidden_act="gelu",
        image_size=image_size,
        patch_size=patch_size,
        num_channels=3,
        layer_norm_eps=1e-12,
        qkv_bias=True,
        id2label=dict(enumerate(CLASS_NAMES)),
    )


def images_to_pixel_values(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[n, H, W, 3]`` -> float ``[n, 3, H, W]`` the ViT way: ``(x / 255 - 0.5) / 0.5``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (x / 255.0 - 0.5) / 0.5


def learning_rate(step: int, total_steps: int, peak: float, warmup: int, floor: float = 0.02) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to ``floor * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def make_optimizer(model: torch.nn.Module, lr: float = 1e-3, weight_decay: float = 0.05) -> torch.optim.AdamW:
    """AdamW; weight decay only on the matrices (not on biases, norms, CLS or position embeddings)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.ndim < 2 or "position_embeddings" in name or "cls_token" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


def init_sincos_positions(model: ViTForImageClassification, pixel_values: torch.Tensor | None = None) -> None:
    """Start the learned position embeddings at 2-D sine-cosine values (CLS row left as it was).

    The sines are scaled to the spread of the patch embeddings at initialisation (measured on
    ``pixel_values`` when given), so the token starts as an even mix of "what" and "where". Only
    the starting values change: the embeddings are still trained, and the checkpoint format is the
    usual one.
    """
    from .analysis import sincos_2d_position_embeddings

    config = model.config
    table = torch.from_numpy(sincos_2d_position_embeddings(config.grid_size, config.hidden_size)).float()
    embeddings = model.vit.embeddings
    with torch.no_grad():
        if pixel_values is not None:
            target = embeddings.patch_embeddings(pixel_values).std().item()
        else:
            target = 0.1
        table = table * (target / table.std().item())
        embeddings.position_embeddings[0, 1:].copy_(table)


def _factor_pair(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``left [d, rank]`` and ``right [d, rank]`` with ``left @ right.T`` the best rank-``rank`` fit of ``matrix``."""
    u, s, vh = torch.linalg.svd(matrix)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, vh[:rank].T * root


def init_mimetic_attention(
    model: ViTForImageClassification,
    *,
    seed: int = 0,
    qk: tuple[float, float] = (0.7, 0.7),
    vo: tuple[float, float] = (0.4, 0.4),
) -> None:
    """Start every attention block near what trained ViTs' attention blocks look like ("mimetic" start).

    Trockman & Kolter 2023 ("Mimetic Initialization of Self-Attention Layers", ICML) saw that in
    trained ViTs each head's ``W_q W_k^T`` is close to a multiple of the identity (a token attends to
    tokens like itself, which with position embeddings means: to its neighbours) and ``W_v W_o`` close
    to a negative multiple of it. Starting there instead of from noise made small ViTs train faster
    on small data sets. With ``Z`` a random ``d x d`` matrix of entries ``N(0, 1/d)``:
    per head, ``W_q W_k^T`` is the best rank-``head_dim`` fit of ``a1 Z + b1 I`` (a fresh ``Z`` per
    head); per layer, ``W_v W_o`` equals ``a2 Z - b2 I`` (``qk = (a1, b1)``, ``vo = (a2, b2)``, the
    paper's values by default). Biases start at zero. Only the starting values change: it is the
    same model and checkpoint format.
    """
    config = model.config
    d, heads, head_dim = config.hidden_size, config.num_attention_heads, config.head_dim
    generator = torch.Generator().manual_seed(seed)
    eye = torch.eye(d)

    def noisy_identity(alpha: float, beta: float) -> torch.Tensor:
        return alpha * torch.randn(d, d, generator=generator) / math.sqrt(d) + beta * eye

    with torch.no_grad():
        for layer in model.vit.encoder.layer:
            attn, out = layer.attention.attention, layer.attention.output.dense
            for h in range(heads):
                rows = slice(h * head_dim, (h + 1) * head_dim)
                left, right = _factor_pair(noisy_identity(*qk), head_dim)
                attn.query.weight[rows] = left.T  # q = x W_q^T, so (x W_q^T)(y W_k^T)^T = x left right^T y^T
                attn.key.weight[rows] = right.T
            left, right = _factor_pair(noisy_identity(vo[0], -vo[1]), d)
            attn.value.weight.copy_(left.T)  # x W_v^T W_o^T = x left right^T
            out.weight.copy_(right)
            for linear in (attn.query, attn.key, attn.value, out):
                if linear.bias is not None:
                    linear.bias.zero_()


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    clip_norm: float | None = 1.0,
    precision: str = "fp32",
    keep_patches: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
) -> tuple[float, float]:
    """One optimiser step on a batch; returns (loss, accuracy) measured before the update.

    ``precision="bf16"`` runs the forward pass under autocast to bfloat16 (matrix products in
    bfloat16, accumulated in float32; the weights, the optimiser state and the loss stay float32).
    ``keep_patches`` (``[B, k]`` patch indices, see :func:`forward_keeping`) trains on only those
    patch tokens of each picture. ``targets`` (``[B, classes]`` probabilities, e.g. from
    :func:`~vit_explain.augment.mix_batch`) replaces the one-hot labels in the loss; the accuracy is
    still counted against ``labels``.
    """
    model.train()
    bf16 = _use_bf16(precision)
    with torch.autocast(pixel_values.device.type, dtype=torch.bfloat16, enabled=bf16), \
            _attention_kernel_for_training(pixel_values.device, bf16):
        if keep_patches is None:
            logits = model(pixel_values).logits
        else:
            logits = forward_keeping(model, pixel_values, keep_patches)
    logits = logits.float()
    loss = F.cross_entropy(logits, labels if targets is None else targets, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    accuracy = (logits.detach().argmax(-1) == labels).float().mean().item()
    return loss.item(), accuracy


def _attention_kernel_for_training(device: torch.device, bf16: bool):
    """For bf16 training steps on CPU, PyTorch's plain ("math") attention kernel instead of its fused one.

    Measured here (torch 2.13 CPU, 2 threads, the CIFAR recipe: batch 128, 33 tokens, 3 heads of 64, bf16):
    the fused CPU kernel's backward pass took 45% of a training step (21 ms a layer); with the plain
    kernel a step took 194 ms instead of 287 ms. In float32 the two were within 3% (320 vs 328 ms), so
    float32 training (the shapes recipe) keeps the fused kernel and its shipped weights stay reproducible.
    Both compute softmax(q k^T / sqrt(d)) v; inference keeps the fused kernel; CUDA keeps PyTorch's choice.
    """
    if device.type != "cpu" or not bf16:
        return contextlib.nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # an older torch: its own choice
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def forward_keeping(model: ViTForImageClassification, pixel_values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Class logits from the CLS token when the encoder sees only some patch tokens of each picture.

    "Patch dropout" (Liu et al. 2023, "PatchDropout: Economizing Vision Transformers Using Patch
    Dropout"; FLIP, Li et al. 2023, masks CLIP's image tokens the same way): after the position
    embeddings are added, each picture keeps the CLS token and the patches listed in its row of
    ``keep`` (``[B, k]`` indices into the g*g patches). The encoder's cost falls with the token count,
    so a training step is cheaper; the model itself is unchanged and sees every patch at test time.
    """
    if model.config.num_prefix_tokens != 1 or model.config.use_distillation_head:
        raise ValueError("patch dropout is written for the classic ViT (CLS token only)")
    tokens = model.vit.embeddings(pixel_values)  # [B, 1 + N, D]
    patches = tokens[:, 1:]
    index = repeat(keep.to(tokens.device), "b k -> b k d", d=tokens.shape[-1])
    tokens = torch.cat([tokens[:, :1], patches.gather(1, index)], dim=1)  # [B, 1 + k, D]
    x, _, _ = model.vit.encoder(tokens)
    x = model.vit.layernorm(x)
    return model.classifier(x[:, 0])  # [B, K]


def _check_keep_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:
        raise ValueError(f"the fraction of patches kept must be in (0, 1], not {fraction}")


def patches_to_keep(rng: np.random.Generator, batch: int, num_patches: int, fraction: float) -> torch.Tensor | None:
    """``[batch, k]`` sorted patch indices drawn without replacement per picture (None when all are kept)."""
    _check_keep_fraction(fraction)
    k = max(1, round(fraction * num_patches))
    if k >= num_patches:
        return None
    pick = np.sort(np.argsort(rng.random((batch, num_patches)), axis=1)[:, :k], axis=1)
    return torch.from_numpy(pick)


PRECISIONS = ("fp32", "bf16")


def _use_bf16(precision: str) -> bool:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    return precision == "bf16"


def clutter_at(step: int, total_steps: int, curriculum: float) -> float:
    """Background clutter for a step: rises linearly from 0 to 1 over the first ``curriculum`` of the run."""
    if curriculum <= 0:
        return 1.0
    return min(1.0, step / (curriculum * total_steps))


def _batches(seed: int, steps: int, batch_size: int, image_size: int, curriculum: float = 0.0, start: int = 0):
    """Training batches, drawn one step ahead in a background thread (numpy mostly releases the GIL)."""
    ready: queue.Queue = queue.Queue(maxsize=2)

    def produce():
        for step in range(start, steps):
            clutter = clutter_at(step, steps, curriculum)
            images, labels, _ = sample(batch_size, seed=[seed, step], image_size=image_size, clutter=clutter)
            ready.put((images, labels))

    threading.Thread(target=produce, daemon=True).start()
    for _ in range(start, steps):
        images, labels = ready.get()
        yield images_to_pixel_values(images), torch.from_numpy(labels)


def train(
    config: ViTConfig | None = None,
    *,
    steps: int = 8000,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup: int = 200,
    label_smoothing: float = 0.05,
    curriculum: float = 0.2,
    position_init: str = "sincos",
    seed: int = 0,
    log_every: int = 50,
    eval_every: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[ViTForImageClassification, list[dict]]:
    """Train a fresh model on synthetic batches; returns it (in eval mode) and one record per log line."""
    config = config or default_config()
    torch.manual_seed(seed)
    model = ViTForImageClassification(config)
    model.init_weights(seed=seed)
    if position_init == "sincos":
        probe, _, _ = sample(64, seed=[seed, _PROBE_STEP], image_size=config.image_size)
        init_sincos_positions(model, images_to_pixel_values(probe))
    elif position_init != "random":
        raise ValueError(f"position_init must be 'sincos' or 'random', got {position_init!r}")
    optimizer = make_optimizer(model, lr=lr, weight_decay=weight_decay)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model: {n_params:,} parameters, {config.num_hidden_layers} layers, width {config.hidden_size}, "
        f"{config.num_attention_heads} heads, {config.grid_size}x{config.grid_size} patches of "
        f"{config.patch_size}px; {steps} steps of {batch_size} images, peak lr {lr}, seed {seed}"
    )
    history: list[dict] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    window_loss, window_acc, window_n = 0.0, 0.0, 0
    for step, (pixel_values, labels) in enumerate(
        _batches(seed, steps, batch_size, config.image_size, curriculum)
    ):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup)
        loss, acc = train_step(model, optimizer, pixel_values, labels, label_smoothing=label_smoothing)
        window_loss, window_acc, window_n = window_loss + loss, window_acc + acc, window_n + 1
        last = step + 1 == steps
        if log_every and ((step + 1) % log_every == 0 or last):
            record = dict(
                step=step + 1,
                loss=window_loss / window_n,
                accuracy=window_acc / window_n,
                lr=optimizer.param_groups[0]["lr"],
                clutter=clutter_at(step, steps, curriculum),
                elapsed=time.perf_counter() - start,
                cpu=time.process_time() - cpu_start,
            )
            line = (
                f"step {record['step']:5d}/{steps}  loss {record['loss']:.4f}  train acc "
                f"{record['accuracy']:.3f}  lr {record['lr']:.2e}  clutter {record['clutter']:.2f}  elapsed {record['elapsed']:7.1f}s (cpu {record['cpu']:7.1f}s)"
            )
            if eval_every and ((step + 1) % eval_every == 0 or last):
                metrics = evaluate(model, n=256, seed=EVAL_SEED + 1)
                record.update({f"val_{k}": v for k, v in metrics.items()})
                line += f"  | val acc {metrics['accuracy']:.3f}  rollout on object {metrics['rollout_on_object']:.3f}"
            history.append(record)
            log(line)
            window_loss, window_acc, window_n = 0.0, 0.0, 0
    model.eval()
    return model, history


# --------------------------------------------------------------------------- real pictures (ImageFolder)


@torch.no_grad()
def evaluate_split(model: torch.nn.Module, split, num_classes: int, *, batch_size: int = 500, device: str = "cpu") -> dict:
    """Top-1 accuracy, per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    was_training = model.training
    model.eval()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for i in range(0, len(split), batch_size):
        x = images_to_pixel_values(split.images[i : i + batch_size]).to(device)
        predicted = model(x).logits.argmax(-1).cpu().numpy()
        np.add.at(confusion, (split.labels[i : i + batch_size], predicted), 1)
    model.train(was_training)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return dict(
        top1=float(confusion.diagonal().sum() / max(1, confusion.sum())),
        per_class=per_class.tolist(),
        confusion=confusion.tolist(),
        n=int(confusion.sum()),
    )


class Progress:
    """A one-line progress report with rate and ETA: redrawn in place on a terminal, a line per ``every`` steps otherwise."""

    def __init__(self, total: int, *, every: int = 50, log: Callable[[str], None] = print, start_step: int = 0):
        self.total, self.every, self.log = total, every, log
        self.start_step = start_step
        self.started = time.perf_counter()
        self.tty = os.isatty(2)

    def eta(self, step: int) -> float:
        done = step - self.start_step
        elapsed = time.perf_counter() - self.started
        return elapsed / max(done, 1) * (self.total - step)

    def update(self, step: int, text: str) -> None:
        if not (self.tty or step % self.every == 0 or step == self.total):
            return
        eta = self.eta(step)
        line = f"[{100 * step / self.total:5.1f}%] step {step}/{self.total}  {text}  ETA {int(eta // 3600)}h{int(eta % 3600 // 60):02d}m{int(eta % 60):02d}s"
        if self.tty:
            import sys

            sys.stderr.write("\r" + line[:160].ljust(160))
            sys.stderr.flush()
            if step % self.every == 0 or step == self.total:
                sys.stderr.write("\n")
        else:
            self.log(line)


def train_images(
    config: ViTConfig,
    data,
    *,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup_epochs: float = 2.0,
    label_smoothing: float = 0.1,
    seed: int = 0,
    state_path: str | os.PathLike | None = None,
    device: str | None = None,
    eval_every_epochs: int = 1,
    eval_n: int = 2000,
    log: Callable[[str], None] = print,
    log_every: int = 50,
    stop_after_epochs: int | None = None,
    precision: str = "fp32",
    keep_patches: float = 1.0,
    full_epochs: int = 0,
    mimetic: bool = False,
    rand_augment_ops: int = 0,
    rand_augment_magnitude: float = 9,
    mix: float = 0.0,
    augment_ramp: bool = False,
) -> tuple[ViTForImageClassification, list[dict]]:
    """Train a fresh ViT on an :class:`~vit_explain.imagefolder.ImageDataset`; returns it (eval mode) and per-epoch records.

    Each epoch visits every training picture once in an order drawn from the seed sequence
    ``[seed, epoch]``, augmented from ``[seed, epoch, 1]``: cropped and flipped
    (:func:`~vit_explain.augment.crop_and_flip`), then, with ``rand_augment_ops`` > 0, that many
    RandAugment operations of strength ``rand_augment_magnitude`` per picture
    (:func:`~vit_explain.augment.rand_augment`), and with probability ``mix`` a batch is mixed up or
    CutMixed (:func:`~vit_explain.augment.mix_batch`; the loss then uses the mixed labels, the
    reported training accuracy counts each picture's main label). With ``augment_ramp`` both the
    RandAugment strength and the share of mixed batches grow linearly over the run, from a
    ``1 / epochs`` of the given values in the first epoch to the full values in the last (weak
    regularisation while the model is still learning, strong once it could memorise; the
    "progressive learning" of Tan & Le 2021, EfficientNetV2, section 4). With ``state_path``
    the model, optimiser and history are saved there after every epoch, and a run started again
    with the same arguments resumes from it (the result equals an uninterrupted run's on CPU).
    ``stop_after_epochs`` ends the call early (the state is saved), as an interruption would.
    ``precision`` as in :func:`train_step` (on this project's 2-core CPU, which has AVX-512 BF16 and AMX,
    bf16 trained 1.08 x as many pictures a second as fp32 at the CIFAR recipe's width 192 and 1.25 x at
    width 256: much of a small ViT's time is outside the matrix products). Held-out checks and the final
    evaluation always run in float32, as the app does.
    ``keep_patches`` < 1 trains on that fraction of each picture's patch tokens, drawn afresh per
    picture and step (:func:`forward_keeping`), except in the last ``full_epochs`` epochs, which see
    every patch, as the test does.
    """
    _use_bf16(precision)  # refuse an unknown precision before any work
    _check_keep_fraction(keep_patches)  # refused before any work
    check_settings(rand_augment_magnitude, mix)  # likewise, not at the epoch the ramp passes 30
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    model = ViTForImageClassification(config)
    model.init_weights(seed=seed)
    if mimetic:
        init_mimetic_attention(model, seed=seed)
    probe = data.train.images[np.random.default_rng([seed, 2**31]).choice(len(data.train), size=min(256, len(data.train)), replace=False)]
    init_sincos_positions(model, images_to_pixel_values(probe))
    model.to(device)
    optimizer = make_optimizer(model, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(data.train) / batch_size)
    total_steps = epochs * steps_per_epoch
    warmup = max(1, int(warmup_epochs * steps_per_epoch))
    history: list[dict] = []
    first_epoch = 0
    state_file = Path(state_path) if state_path else None
    if state_file is not None and state_file.exists():
        state = torch.load(state_file, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch = int(state["epoch"])
        history = json.loads(state["history"])
        log(f"resumed from {state_file} after epoch {first_epoch}")
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model: {n_params:,} parameters, {config.num_hidden_layers} layers, width {config.hidden_size}, "
        f"{config.num_attention_heads} heads, MLP {config.intermediate_size}, {config.grid_size}x{config.grid_size} "
        f"patches of {config.patch_size}px; data: {len(data.train):,} training / {len(data.test):,} held-out pictures, "
        f"{len(data.classes)} classes; {epochs} epochs x {steps_per_epoch} steps of {batch_size}, peak lr {lr}, "
        f"device {device}, {precision}, {torch.get_num_threads()} threads, seed {seed}"
        + (f"; {keep_patches:.0%} of the patches kept in all but the last {full_epochs} epochs" if keep_patches < 1 else "")
        + (f"; RandAugment {rand_augment_ops} ops at magnitude {rand_augment_magnitude:g}" if rand_augment_ops > 0 else "")
        + (f"; mixup/CutMix on {mix:.0%} of the batches" if mix > 0 else "")
        + ("; both ramped up linearly over the epochs" if augment_ramp and (rand_augment_ops > 0 or mix > 0) else "")
    )
    progress = Progress(total_steps, every=log_every, log=log, start_step=first_epoch * steps_per_epoch)
    eval_subset = None
    if eval_n and eval_n < len(data.test):
        pick = np.random.default_rng([seed, 2**31 + 1]).choice(len(data.test), size=eval_n, replace=False)
        eval_subset = type(data.test)(data.test.images[np.sort(pick)], data.test.labels[np.sort(pick)])
    started, cpu_started = time.perf_counter(), time.process_time()
    last_epoch = epochs if stop_after_epochs is None else min(epochs, first_epoch + stop_after_epochs)
    for epoch in range(first_epoch, last_epoch):
        order = np.random.default_rng([seed, epoch]).permutation(len(data.train))
        aug_rng = np.random.default_rng([seed, epoch, 1])
        ramp = (epoch + 1) / epochs if augment_ramp else 1.0
        run_loss, run_acc, run_n = 0.0, 0.0, 0
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            index = order[i * batch_size : (i + 1) * batch_size]
            images = crop_and_flip(data.train.images[index], aug_rng)
            images = rand_augment(images, aug_rng, rand_augment_ops, rand_augment_magnitude * ramp)
            keep = None
            if epoch < epochs - full_epochs:
                keep = patches_to_keep(aug_rng, len(index), config.num_patches, keep_patches)
            pixel_values = images_to_pixel_values(images).to(device)
            labels = torch.from_numpy(data.train.labels[index]).to(device)
            targets = None
            if mix > 0 and aug_rng.random() < mix * ramp:
                pixel_values, targets = mix_batch(pixel_values, labels, len(data.classes), aug_rng)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, lr, warmup, floor=0.0)
            loss, acc = train_step(model, optimizer, pixel_values, labels, label_smoothing=label_smoothing,
                                   precision=precision, keep_patches=keep, targets=targets)
            run_loss, run_acc, run_n = run_loss + loss, run_acc + acc, run_n + 1
            progress.update(step + 1, f"epoch {epoch + 1}/{epochs}  loss {run_loss / run_n:.4f}  train acc {run_acc / run_n:.3f}")
        record = dict(
            epoch=epoch + 1,
            step=(epoch + 1) * steps_per_epoch,
            loss=run_loss / run_n,
            train_accuracy=run_acc / run_n,
            lr=optimizer.param_groups[0]["lr"],
            elapsed=time.perf_counter() - started,
            cpu=time.process_time() - cpu_started,
        )
        if eval_every_epochs and ((epoch + 1) % eval_every_epochs == 0 or epoch + 1 == epochs):
            held_out = evaluate_split(model, eval_subset or data.test, len(data.classes), device=device)
            record["held_out_top1"] = held_out["top1"]
            record["held_out_n"] = held_out["n"]
        history.append(record)
        log(
            f"epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}, train acc {record['train_accuracy']:.4f}"
            + (f", held-out top-1 {record['held_out_top1']:.4f} on {record['held_out_n']}" if "held_out_top1" in record else "")
            + f"  ({record['elapsed']:.0f} s this session)"
        )
        if state_file is not None:
            state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = state_file.with_suffix(".tmp")
            torch.save(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1, "history": json.dumps(history)},
                tmp,
            )
            os.replace(tmp, state_file)
    model.eval()
    return model.cpu(), history


# --------------------------------------------------------------------------- evaluation


def cls_rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout from the CLS token over the patches: ``[B, num_patches]``, rows sum to 1.

    Per layer the heads are averaged and the residual path is counted as half the flow
    (``0.5 * A + 0.5 * I``, rows renormalised); the layers' matrices are multiplied from the first
    to the last; the CLS row, without its own entry, is renormalised over the patches.
    """
    rollout = None
    for probs in attentions:  # each [B, H, T, T]
        a = probs.mean(dim=1)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    cls_to_patches = rollout[:, 0, 1:]
    return cls_to_patches / cls_to_patches.sum(dim=-1, keepdim=True)


def _patches_touching_boxes(boxes: np.ndarray, image_size: int, patch_size: int) -> torch.Tensor:
    """bool ``[n, grid * grid]``: which patches (row-major) overlap each box ``x0, y0, x1, y1``."""
    grid = image_size // patch_size
    lo = np.arange(grid) * patch_size
    hi = lo + patch_size
    cols = (lo[None] < boxes[:, 2:3]) & (hi[None] > boxes[:, 0:1])  # [n, grid]
    rows = (lo[None] < boxes[:, 3:4]) & (hi[None] > boxes[:, 1:2])
    return torch.from_numpy((rows[:, :, None] & cols[:, None, :]).reshape(len(boxes), -1))


@torch.no_grad()
def evaluate(model: ViTForImageClassification, n: int = 1000, seed: int = EVAL_SEED, batch_size: int = 250) -> dict:
    """Accuracy and mean CLS-rollout mass on the object's patches, on ``n`` fresh synthetic images."""
    config = model.config
    was_training = model.training
    model.eval()
    images, labels, boxes = sample(n, seed=seed, image_size=config.image_size)
    correct, on_object = 0, 0.0
    for i in range(0, n, batch_size):
        out = model(images_to_pixel_values(images[i : i + batch_size]), output_attentions=True)
        correct += (out.logits.argmax(-1).numpy() == labels[i : i + batch_size]).sum()
        mass = cls_rollout(out.attentions)
        touching = _patches_touching_boxes(boxes[i : i + batch_size], config.image_size, config.patch_size)
        on_object += (mass * touching).sum().item()
    model.train(was_training)
    return dict(accuracy=float(correct) / n, rollout_on_object=on_object / n)


# --------------------------------------------------------------------------- files


def _preprocessor_config(config: ViTConfig) -> dict:
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": config.image_size, "width": config.image_size},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }


def save_model(model: ViTForImageClassification, out_dir: str | os.PathLike) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``preprocessor_config.json`` (Hugging Face layout).

    Uses :func:`vit_explain.weights.save_checkpoint` when that module is present, otherwise
    writes the three files itself.
    """
    out = Path(out_dir)
    try:
        from .weights import save_checkpoint
    except ImportError:  # the weights module is optional for training
        save_checkpoint = None
    if save_checkpoint is not None:
        save_checkpoint(model, out)
        return out
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.update(model_type="vit", architectures=["ViTForImageClassification"])
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config(model.config), indent=2) + "\n")
    return out


def load_model(model_dir: str | os.PathLike) -> ViTForImageClassification:
    """Read a directory written by :func:`save_model` into our ViTForImageClassification (eval mode)."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    config = ViTConfig.from_dict(json.loads((model_dir / "config.json").read_text()))
    model = ViTForImageClassification(config)
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")), strict=True)
    return model.eval()


# --------------------------------------------------------------------------- command line

#: Named recipes: their defaults reproduce the shipped models (assets/models/<name>/).
RECIPES: dict[str, dict] = {
    # The bundled shapes model: fresh synthetic batches every step (see train()).
    "shapes": dict(
        out="assets/models/shapes", steps=8000, batch_size=64, lr=1e-3, weight_decay=0.05, warmup=200,
        label_smoothing=0.05, image_size=64, patch_size=8, hidden_size=96, layers=4, heads=4,
        intermediate_size=None, threads=1,
    ),
    # The CIFAR-10 model: a ViT-Lite-sized classic ViT (Hassani et al. 2021 use 7 layers of 256 for
    # CIFAR; this one is narrower to fit a 2-core CPU budget) with the standard crop + flip
    # augmentation, label smoothing 0.1, AdamW, linear warm-up then cosine decay to zero. Patch dropout
    # (half of the patches per step, every epoch) and PyTorch's plain attention kernel for the bf16 steps
    # (its backward is a third faster than the fused one on this CPU) fit 100 epochs into the 2 hours; the
    # attention weights start mimetic (Trockman & Kolter 2023), near the local patterns trained ViTs show.
    # On top of crop + flip, RandAugment (2 operations) and mixup / CutMix, both ramped up over the run to
    # magnitude 12 and 80% of the batches at the end: the same recipe without them learnt faster in its
    # first half and then memorised (training accuracy 88%, held-out 76%, from epoch 60 on); at full
    # strength from the first epoch (magnitude 9, every batch mixed) they held it back (47% held-out at
    # epoch 10, against 57%).
    "cifar10": dict(
        out="assets/models/vit-cifar10", data="../shared/data/cifar10-jpeg.tar.gz", epochs=100, batch_size=128, lr=1e-3,
        weight_decay=0.05, warmup_epochs=2.0, label_smoothing=0.1, image_size=32, patch_size=4, hidden_size=192,
        layers=6, heads=3, intermediate_size=384, threads=0, precision="bf16", keep_patches=0.5, full_epochs=0,
        attention_init="mimetic", rand_augment_ops=2, rand_augment_magnitude=12, mix=0.8, augment_ramp="linear",
    ),
}


def _write_evaluation(out: Path, metrics: dict, classes: list[str]) -> None:
    (out / "evaluation.json").write_text(json.dumps({"classes": classes, **metrics}, indent=2) + "\n")
    lines = ["true \\ predicted," + ",".join(classes)]
    lines += [f"{name}," + ",".join(str(v) for v in row) for name, row in zip(classes, metrics["confusion"])]
    (out / "confusion_matrix.csv").write_text("\n".join(lines) + "\n")


def _main_images(args, log: Callable[[str], None]) -> int:
    from .imagefolder import load_image_folder

    started = time.perf_counter()
    data = load_image_folder(args.data, image_size=args.image_size, limit_per_class=args.limit_per_class)
    log(f"read {len(data.train):,} + {len(data.test):,} pictures from {data.source} in {time.perf_counter() - started:.1f} s")
    config = default_config(
        image_size=args.image_size, patch_size=args.patch_size, hidden_size=args.hidden_size,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, intermediate_size=args.intermediate_size,
    ).replace(id2label=dict(enumerate(data.classes)), num_labels=len(data.classes))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, history = train_images(
        config, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing, seed=args.seed,
        state_path=out / "train_state.pt", device=args.device, log=log, log_every=args.log_every,
        stop_after_epochs=args.stop_after_epochs, precision=args.precision, keep_patches=args.keep_patches,
        full_epochs=args.full_epochs, mimetic=args.attention_init == "mimetic",
        rand_augment_ops=args.rand_augment_ops, rand_augment_magnitude=args.rand_augment_magnitude, mix=args.mix,
        augment_ramp=args.augment_ramp == "linear",
    )
    if len(history) < args.epochs:
        log(f"stopped after epoch {len(history)} of {args.epochs}; run the same command again to resume")
        return 0
    save_model(model, out)
    metrics = evaluate_split(model, data.test, len(data.classes))
    _write_evaluation(out, metrics, data.classes)
    (out / "train_state.pt").unlink(missing_ok=True)
    minutes = history[-1]["elapsed"] / 60
    log(f"trained in {minutes:.1f} min (this session); saved to {out}")
    log(f"held-out top-1 on all {metrics['n']:,} pictures: {metrics['top1']:.4f}")
    for name, acc in zip(data.classes, metrics["per_class"]):
        log(f"  {name:12s} {acc:.3f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vit_explain.train", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--recipe", choices=sorted(RECIPES), default=None,
        help="named defaults that reproduce a shipped model (default: cifar10 when --data is given, else shapes)",
    )
    parser.add_argument("--data", help="ImageFolder folder or .tar/.tar.gz (train/ and test/, or one folder split 90/10)")
    parser.add_argument("--out", help="directory to save the trained model in (default: the recipe's)")
    parser.add_argument("--evaluate", metavar="DIR", help="only measure the model saved in DIR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="shapes: optimiser steps")
    parser.add_argument("--epochs", type=int, help="pictures: passes over the training split")
    parser.add_argument("--stop-after-epochs", type=int, default=None, help="pictures: stop early (resumable) after this many epochs")
    parser.add_argument("--limit-per-class", type=int, default=None, help="pictures: read at most N per class and split")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--warmup", type=int, help="shapes: warm-up steps")
    parser.add_argument("--warmup-epochs", type=float, help="pictures: warm-up epochs")
    parser.add_argument("--label-smoothing", type=float)
    parser.add_argument(
        "--curriculum", type=float, default=0.2, help="shapes: fraction of the run over which clutter ramps from 0 to 1"
    )
    parser.add_argument(
        "--position-init", choices=["sincos", "random"], default="sincos",
        help="starting values of the (learned) position embeddings",
    )
    parser.add_argument(
        "--attention-init", choices=["normal", "mimetic"], default=None,
        help="pictures: starting values of the attention weights (normal: Hugging Face's; mimetic: near the identity "
             "patterns trained ViTs show, see init_mimetic_attention); default: the recipe's",
    )
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--patch-size", type=int)
    parser.add_argument("--hidden-size", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--intermediate-size", type=int, default=None, help="default: the recipe's (shapes: 4 x hidden size)")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=250, help="shapes: quick check on 256 images (0: never)")
    parser.add_argument("--eval-n", type=int, default=1000)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="pictures: bf16 autocasts the forward pass (weights stay float32); default: the recipe's")
    parser.add_argument("--keep-patches", type=float, default=None,
                        help="pictures: fraction of each picture's patch tokens a training step sees (patch dropout; "
                             "1 = all); default: the recipe's")
    parser.add_argument("--rand-augment-ops", type=int, default=None,
                        help="pictures: RandAugment operations per picture (0: none); default: the recipe's")
    parser.add_argument("--rand-augment-magnitude", type=float, default=None,
                        help="pictures: RandAugment strength, 0-30; default: the recipe's")
    parser.add_argument("--mix", type=float, default=None,
                        help="pictures: share of the batches mixed up or CutMixed (0: none); default: the recipe's")
    parser.add_argument("--augment-ramp", choices=["none", "linear"], default=None,
                        help="pictures: linear grows the RandAugment strength and the mixed share from nothing to "
                             "their values over the run; default: the recipe's")
    parser.add_argument("--full-epochs", type=int, default=None,
                        help="pictures: the last N epochs see every patch; default: the recipe's")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads, 0 for all cores (shapes default 1: on a busy 2-core machine one thread ran twice "
        "as fast as two, and the batch generator gets the other core)",
    )
    args = parser.parse_args(argv)
    recipe_name = args.recipe or ("cifar10" if args.data else "shapes")
    for key, value in RECIPES[recipe_name].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    log = lambda line: print(line, flush=True)  # noqa: E731

    if args.evaluate:
        model = load_model(args.evaluate)
        metrics = evaluate(model, n=args.eval_n)
        print(json.dumps(metrics, indent=2))
        return 0
    if recipe_name != "shapes":
        log(f"recipe {recipe_name}: " + ", ".join(f"{k}={getattr(args, k)}" for k in RECIPES[recipe_name]))
        return _main_images(args, log)

    config = default_config(
        image_size=args.image_size,
        patch_size=args.patch_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate_size,
    )
    started = time.perf_counter()
    model, _ = train(
        config,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        label_smoothing=args.label_smoothing,
        curriculum=args.curriculum,
        position_init=args.position_init,
        seed=args.seed,
        log_every=args.log_every,
        eval_every=args.eval_every,
        log=log,
    )
    minutes = (time.perf_counter() - started) / 60
    out = save_model(model, args.out)
    metrics = evaluate(model, n=args.eval_n)
    log(f"trained in {minutes:.1f} min; saved to {out}")
    log(
        f"evaluation on {args.eval_n} fresh images (seed {EVAL_SEED}): accuracy {metrics['accuracy']:.4f}, "
        f"rollout on object {metrics['rollout_on_object']:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
