"""What the Training page draws at one point of a run (:class:`Snapshot`), and how it is measured.

Every number comes from its one home: the CLS token's attention from
:func:`vit_explain.analysis.cls_attention_map`, the attention distances from
:func:`vit_explain.analysis.attention_distance_all`, the position similarity from
:func:`vit_explain.analysis.cosine_matrix`, the filters from
:func:`vit_explain.analysis.patch_filter_pca`, the top-5 from :func:`vit_explain.weights.top_k`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ViTConfig
from ..model import backbone
from .data import images_to_pixel_values

__all__ = ["Snapshot", "snapshot_bytes", "take_snapshot", "thin", "cls_attention", "MAX_SNAPSHOTS",
           "FILTER_COMPONENTS"]

#: Snapshots kept per run at most (thinned evenly when full).
MAX_SNAPSHOTS = 40
#: Patch-embedding filter components drawn per snapshot.
FILTER_COMPONENTS = 16


@dataclass
class Snapshot:
    """What the page draws at one point of the run (float32/float16/uint8 arrays, small)."""

    step: int
    seconds: float  # training time so far
    held_out_loss: float
    held_out_accuracy: float
    cls_attention: np.ndarray  # float32 [L, H, N]: the CLS token's attention to each patch, probe picture
    attention_distance: np.ndarray  # float32 [L, H]: mean distance (pixels) a head looks over, probe picture
    position_similarity: np.ndarray  # float16 [N, N]: cosine similarity of the patches' position embeddings
    filters: np.ndarray  # uint8 [k, C, P, P]: principal components of the patch-embedding filters, 0..255
    filter_variance: np.ndarray  # float32 [k]: share of the filters' variance each component explains
    top5: list[tuple[str, float]]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.cls_attention, self.attention_distance, self.position_similarity,
                                      self.filters, self.filter_variance)) + 64 * len(self.top5) + 64


def snapshot_bytes(config: ViTConfig, components: int = FILTER_COMPONENTS) -> int:
    """Array bytes of one snapshot for ``config`` (what :data:`MAX_SNAPSHOTS` multiplies)."""
    L, H, N, P, C = (config.num_hidden_layers, config.num_attention_heads, config.num_patches, config.patch_size,
                     config.num_channels)
    k = min(components, config.hidden_size, C * P * P)
    return 4 * L * H * N + 4 * L * H + 2 * N * N + k * P * P * C + 4 * k


def cls_attention(attentions: torch.Tensor, grid: int) -> np.ndarray:
    """float32 ``[L, H, g*g]``: the CLS token's raw attention weight on each patch, per layer and head.

    :func:`vit_explain.analysis.cls_attention_map` with every head kept, as a flat row per head.
    """
    from ..analysis import cls_attention_map

    maps = cls_attention_map(attentions.numpy(), grid, head_fusion=None)  # [L, H, g, g], raw weights
    return maps.reshape(*maps.shape[:2], grid * grid).astype(np.float32)


@torch.no_grad()
def take_snapshot(model: torch.nn.Module, data, step: int, seconds: float) -> Snapshot:
    """Measure ``model`` on ``data``'s held-out pictures and probe picture (the model is left as it was)."""
    from ..analysis import attention_distance_all, cosine_matrix, patch_filter_pca
    from ..weights import top_k

    config = model.config
    vit = backbone(model)
    was_training = model.training
    model.eval()
    try:
        x, y = data.held_out()
        losses, correct = [], 0
        for i in range(0, len(y), 256):
            logits = model(x[i : i + 256]).logits
            losses.append(F.cross_entropy(logits, y[i : i + 256], reduction="sum").item())
            correct += int((logits.argmax(-1) == y[i : i + 256]).sum())
        out = model(images_to_pixel_values(data.probe_image[None]), output_attentions=True)
        attentions = torch.cat(out.attentions).float()  # [L, H, T, T]
        n = config.num_patches  # the patches are the last n tokens, after CLS (and any other prefix token)
        weight = vit.embeddings.patch_embeddings.projection.weight
        components, variance = patch_filter_pca(weight.detach().float().numpy(), k=FILTER_COMPONENTS)
        return Snapshot(
            step=step,
            seconds=seconds,
            held_out_loss=sum(losses) / max(1, len(y)),
            held_out_accuracy=correct / max(1, len(y)),
            cls_attention=cls_attention(attentions, config.grid_size),
            attention_distance=attention_distance_all(attentions.numpy(), config.grid_size,
                                                      config.patch_size).astype(np.float32),
            position_similarity=cosine_matrix(
                vit.embeddings.position_embeddings[0, -n:].detach().float().numpy()
            ).astype(np.float16),
            filters=np.rint(np.clip(components, 0, 1) * 255).astype(np.uint8),
            filter_variance=np.asarray(variance, dtype=np.float32),
            top5=top_k(out.logits[0], config.id2label, k=5),
        )
    finally:
        model.train(was_training)


def thin(snapshots: list[Snapshot], every: int, limit: int) -> tuple[list[Snapshot], int]:
    """Keep every other snapshot (the first always) and double the interval: the kept ones stay evenly spaced.

    Returns the kept snapshots and the new interval.
    """
    every *= 2
    kept = [s for s in snapshots if s.step % every == 0]
    if snapshots and (not kept or kept[0] is not snapshots[0]):
        kept.insert(0, snapshots[0])
    if len(kept) >= limit:  # off-grid ones (stops) kept too many: fall back to every other
        kept = snapshots[::2]
    return kept, every
