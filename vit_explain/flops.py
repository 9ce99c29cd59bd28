"""The ViT's nested class structure with the output shape, parameters and FLOPs of every box.

Everything is counted analytically from a :class:`~vit_explain.config.ViTConfig` (no model is
built), for one image (batch 1). FLOPs are those of the matrix products, counting one
multiply-add as 2 FLOPs: the convolution, the linear layers and the two attention products
(Q·Kᵀ and weights·V). Element-wise work (biases, layer norms, softmax, GELU, residual and
position adds) is left out: at ViT-B/16 it is about 0.3 % of the total.

Symbols as in ``model.py``: C channels, P patch size, N patches, T = S + N tokens (S prefix tokens), D hidden size,
H heads, d = D / H, M MLP size, L layers, K labels. The main counts::

    PatchEmbeddings   conv             2 * N * (C*P*P) * D
    ViTSelfAttention  q, k, v          3 * 2 * T * D * D
                      Q·Kᵀ             2 * H * T * T * d
                      weights·V        2 * H * T * T * d
    ViTSelfOutput     dense            2 * T * D * D
    ViTIntermediate   dense            2 * T * D * M
    ViTOutput         dense            2 * T * M * D
    ViTPooler         dense on CLS     2 * D * D
    classifier        linear on CLS    2 * D * K
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import ViTConfig


@dataclass(frozen=True)
class Block:
    """One box of the architecture diagram (values include everything nested inside it)."""

    id: str  # unique path such as "ViTModel/ViTEncoder/ViTLayer 0"
    parent: str  # id of the enclosing box ("" for the root)
    label: str  # what the box shows ("ViTLayer 0", "query, key, value" ...)
    cls: str  # the class (or tensor) it stands for ("ViTLayer", "Linear" ...)
    shape_names: str  # named output shape, e.g. "[batch, tokens, hidden]"
    shape: tuple[int, ...]  # the same with this config's numbers (batch 1)
    params: int
    flops: int
    note: str = field(default="", compare=False)


def _linear_params(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


class _Builder:
    def __init__(self) -> None:
        self.blocks: list[Block] = []

    def leaf(self, parent: str, label: str, cls: str, shape_names: str, shape: tuple[int, ...], params: int,
             flops: int, note: str = "") -> Block:
        block = Block(f"{parent}/{label}" if parent else label, parent, label, cls, shape_names, tuple(shape),
                      int(params), int(flops), note)
        self.blocks.append(block)
        return block

    def group(self, parent: str, label: str, cls: str, shape_names: str, shape: tuple[int, ...], build, note: str = ""
              ) -> Block:
        """A box whose params and FLOPs are the sums of the boxes ``build(id)`` adds inside it."""
        block_id = f"{parent}/{label}" if parent else label
        index = len(self.blocks)
        self.blocks.append(None)  # placeholder keeps parents before children
        children = build(block_id)
        block = Block(block_id, parent, label, cls, shape_names, tuple(shape), sum(c.params for c in children),
                      sum(c.flops for c in children), note)
        self.blocks[index] = block
        return block


def architecture(config: ViTConfig, *, has_pooler: bool = False, classifier: bool = True,
                 num_labels: int | None = None) -> list[Block]:
    """Every box of the model, parents before children; the first block is the root.

    ``classifier``: the model is a ViTForImageClassification (root) holding a ViTModel and a
    linear ``classifier`` with ``num_labels`` outputs (default ``config.num_labels``; 0 means the
    head is an identity with no parameters). ``has_pooler``: the ViTModel has a ViTPooler.
    """
    C, P, D = config.num_channels, config.patch_size, config.hidden_size
    N, T, H, d = config.num_patches, config.num_tokens, config.num_attention_heads, config.head_dim
    M, L = config.intermediate_size, config.num_hidden_layers
    K = config.num_labels if num_labels is None else int(num_labels)
    b = _Builder()
    tokens = ("[batch, tokens, hidden]", (1, T, D))

    def embeddings(parent: str) -> list[Block]:
        out = [
            b.leaf(parent, "PatchEmbeddings", "PatchEmbeddings", "[batch, num_patches, hidden]", (1, N, D),
                   C * P * P * D + D, 2 * N * (C * P * P) * D,
                   f"Conv2d {C}->{D}, kernel = stride = {P}: one linear map of each {C}x{P}x{P} patch"),
            b.leaf(parent, "CLS token", "Parameter", "[1, 1, hidden]", (1, 1, D), D, 0,
                   "a learned vector put in front of the patches"),
        ]
        if config.use_distillation_token:
            out.append(b.leaf(parent, "distillation token", "Parameter", "[1, 1, hidden]", (1, 1, D), D, 0,
                              "DeiT's second learned token, after CLS"))
        if config.num_register_tokens:
            R = config.num_register_tokens
            out.append(b.leaf(parent, "register tokens", "Parameter", "[1, registers, hidden]", (1, R, D), R * D, 0,
                              "learned spare tokens after CLS, with no position embedding"))
        if config.use_mask_token:
            out.append(b.leaf(parent, "mask token", "Parameter", "[1, hidden]", (1, D), D, 0,
                              "DINOv2's mask token, kept from training, unused here"))
        rows = config.num_position_embeddings
        out.append(b.leaf(parent, "position embeddings", "Parameter", "[1, positions, hidden]", (1, rows, D), rows * D, 0,
                          "a learned vector per position, added to the tokens"
                          + (f" (trained for a {config.position_grid_size}x{config.position_grid_size} grid, resized)"
                             if config.position_grid_size != config.grid_size else "")))
        return out

    def self_attention(parent: str) -> list[Block]:
        return [
            b.leaf(parent, "query, key, value", "Linear x3", "[batch, heads, tokens, head_dim] x3", (1, H, T, d),
                   3 * _linear_params(D, D, config.qkv_bias), 3 * 2 * T * D * D, "three D x D projections"),
            b.leaf(parent, "scores Q·Kᵀ", "matmul", "[batch, heads, tokens, tokens]", (1, H, T, T), 0,
                   2 * H * T * T * d, "grows with tokens²"),
            b.leaf(parent, "weights·V", "matmul", "[batch, tokens, hidden]", (1, T, D), 0, 2 * H * T * T * d,
                   "softmax weights times values; grows with tokens²"),
        ]

    def attention(parent: str) -> list[Block]:
        return [
            b.group(parent, "ViTSelfAttention", "ViTSelfAttention", *tokens, self_attention),
            b.leaf(parent, "ViTSelfOutput", "ViTSelfOutput", *tokens, _linear_params(D, D), 2 * T * D * D,
                   "output projection D -> D"),
        ]

    def layer(parent: str) -> list[Block]:
        scale = [b.leaf(parent, "layer scale x2", "ViTLayerScale", *tokens, 2 * D, 0,
                        "a learned factor per channel on each residual branch")] if config.layerscale_value is not None else []
        return scale + [
            b.leaf(parent, "LayerNorm before", "LayerNorm", *tokens, 2 * D, 0),
            b.group(parent, "ViTAttention", "ViTAttention", *tokens, attention),
            b.leaf(parent, "LayerNorm after", "LayerNorm", *tokens, 2 * D, 0),
            b.leaf(parent, "ViTIntermediate", "ViTIntermediate", "[batch, tokens, mlp]", (1, T, M),
                   _linear_params(D, M), 2 * T * D * M, f"expansion {D} -> {M}, then {config.hidden_act}"),
            b.leaf(parent, "ViTOutput", "ViTOutput", *tokens, _linear_params(M, D), 2 * T * M * D,
                   f"projection {M} -> {D}, plus the residual"),
        ]

    def encoder(parent: str) -> list[Block]:
        return [b.group(parent, f"ViTLayer {i}", "ViTLayer", *tokens, layer) for i in range(L)]

    def vit(parent: str) -> list[Block]:
        children = [
            b.group(parent, "ViTEmbeddings", "ViTEmbeddings", *tokens, embeddings),
            b.group(parent, "ViTEncoder", "ViTEncoder", *tokens, encoder, note=f"{L} ViTLayers, one after another"),
            b.leaf(parent, "LayerNorm", "LayerNorm", *tokens, 2 * D, 0, "the final layer norm"),
        ]
        if has_pooler:
            children.append(b.leaf(parent, "ViTPooler", "ViTPooler", "[batch, hidden]", (1, D), _linear_params(D, D),
                                   2 * D * D, "dense + tanh on the CLS token"))
        return children

    if not classifier:
        b.group("", "ViTModel", "ViTModel", *tokens, vit)
        return b.blocks

    def top(parent: str) -> list[Block]:
        return [
            b.group(parent, "ViTModel", "ViTModel", *tokens, vit),
            b.leaf(parent, "classifier", "Linear", "[batch, num_labels]", (1, K), _linear_params(D, K) if K else 0,
                   2 * D * K, f"linear head on the final CLS token: {D} -> {K}" if K else "identity (no labels)"),
        ] + ([b.leaf(parent, "distillation_classifier", "Linear", "[batch, num_labels]", (1, K), _linear_params(D, K),
                     2 * D * K, "DeiT's second head, on the distillation token; the two are averaged")]
             if config.use_distillation_head and K else [])

    b.group("", "ViTForImageClassification", "ViTForImageClassification", "[batch, num_labels]", (1, K), top)
    return b.blocks


def total_flops(config: ViTConfig, *, has_pooler: bool = False, classifier: bool = True,
                num_labels: int | None = None) -> int:
    """FLOPs of one forward pass (batch 1, matrix products only, 2 per multiply-add)."""
    return architecture(config, has_pooler=has_pooler, classifier=classifier, num_labels=num_labels)[0].flops


def class_summary(blocks: list[Block]) -> list[dict]:
    """One row per class of the diagram: how many boxes, output shape, parameters, FLOPs, shares.

    Nested classes overlap (a ViTLayer contains its ViTAttention), so the shares of different
    rows are not meant to add up; each says how much of the whole model that class accounts for.
    """
    root = blocks[0]
    rows: dict[str, dict] = {}
    order = ["ViTForImageClassification", "ViTModel", "ViTEmbeddings", "PatchEmbeddings", "ViTEncoder", "ViTLayer",
             "ViTAttention", "ViTSelfAttention", "ViTSelfOutput", "ViTIntermediate", "ViTOutput", "LayerNorm",
             "ViTPooler", "Linear"]
    for block in blocks:
        if block.cls not in order:
            continue
        name = "classifier" if block.cls == "Linear" else block.cls
        row = rows.setdefault(name, dict(cls=name, count=0, shape_names=block.shape_names,
                                         shape=block.shape, params=0, flops=0))
        row["count"] += 1
        row["params"] += block.params
        row["flops"] += block.flops
    out = [rows[n] for n in (("classifier" if c == "Linear" else c) for c in order) if n in rows]
    for row in out:
        row["param_share"] = row["params"] / root.params if root.params else 0.0
        row["flop_share"] = row["flops"] / root.flops if root.flops else 0.0
    return out
