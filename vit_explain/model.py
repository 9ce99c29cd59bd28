"""The Vision Transformer, one class per box of the seed's diagram, written with einops.

Nesting (read top to bottom; ``ViTConfig`` lives in ``config.py``)::

    ViTModel
    ├── ViTEmbeddings
    │   └── PatchEmbeddings
    ├── ViTEncoder
    │   └── ViTLayer  x num_hidden_layers
    │       ├── ViTAttention
    │       │   ├── ViTSelfAttention
    │       │   └── ViTSelfOutput
    │       ├── ViTIntermediate
    │       └── ViTOutput
    └── ViTPooler
    ViTForImageClassification = ViTModel (no pooler) + a linear classifier on the CLS token

Attribute names match the Hugging Face checkpoint keys, so ``state_dict()`` is the Hub format.
Shapes: B batch, C channels, P patch size, N patches, T = S + N tokens, D hidden size,
H heads, d = D / H per head, M intermediate (MLP) size, K labels.

Other members of the ViT family are options of these same classes, switched on by ViTConfig fields
(all off gives the classic ViT): prefix tokens before the patch grid, S = config.num_prefix_tokens
(CLS always first, then DeiT's distillation token, then DINOv2's register tokens) in
ViTEmbeddings; layer scale (DINOv2) in ViTLayer; position embeddings resized to the image's grid
(DINOv2) in ViTEmbeddings; DeiT's second, distillation head in ViTForImageClassification. The
weights package maps each family's checkpoint key names onto these modules.
Every :class:`~vit_explain.capture.Tap` is an identity that :func:`~vit_explain.capture.trace` listens to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, repeat
from torch import nn

from .capture import Tap, is_tracing
from .config import ViTConfig


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class TanhGELU(nn.Module):
    """GELU with the tanh approximation written out (Hugging Face's ``gelu_new``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class FastGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


def activation(name: str) -> nn.Module:
    """The activation module for a config's ``hidden_act``."""
    return {
        "gelu": lambda: nn.GELU(),
        "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
        "gelu_new": TanhGELU,
        "gelu_fast": FastGELU,
        "quick_gelu": QuickGELU,
        "relu": nn.ReLU,
        "silu": nn.SiLU,
        "swish": nn.SiLU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
    }[name]()


class PatchEmbeddings(nn.Module):
    """Image -> one vector per patch (a strided conv). Inside ViTEmbeddings."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.num_patches = config.num_patches
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.tap_patches = Tap("patches")
        self.tap_output = Tap("patch_embeddings")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        b, c, h, w = pixel_values.shape
        if c != self.num_channels or h != self.image_size or w != self.image_size:
            raise ValueError(
                f"expected pixel_values of shape [batch, {self.num_channels}, {self.image_size}, "
                f"{self.image_size}], got {list(pixel_values.shape)}; resize the image to the model's "
                "image_size (vit_explain.preprocess.to_pixel_values does)."
            )
        p = self.patch_size
        if is_tracing():  # the raw pixels of each patch, only worth the copy when someone looks
            self.tap_patches(rearrange(pixel_values, "b c (gh p1) (gw p2) -> b (gh gw) (c p1 p2)", p1=p, p2=p))
        x = self.projection(pixel_values)  # [B, D, H/P, W/P]
        x = rearrange(x, "b d gh gw -> b (gh gw) d")  # [B, N, D]
        return self.tap_output(x)


class ViTEmbeddings(nn.Module):
    """Patch vectors + a learned CLS token in front + learned position embeddings. First block of ViTModel.

    Options (ViTConfig fields): a distillation token after CLS (DeiT), register tokens after
    those (DINOv2 with registers; they get no position embedding: a zero row is added), a mask
    token (DINOv2; kept for its checkpoints, unused here), and position embeddings trained on
    another grid, resized to this image's grid on each pass (DINOv2).
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        d = config.hidden_size
        self.config = config
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        if config.use_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, d))
        if config.use_distillation_token:
            self.distillation_token = nn.Parameter(torch.zeros(1, 1, d))
        if config.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, d))
        self.patch_embeddings = PatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_position_embeddings, d))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.tap_cls = Tap("cls_token")
        self.tap_tokens = Tap("tokens_with_cls")
        self.tap_position = Tap("position_embeddings")
        self.tap_output = Tap("embeddings")

    def grid_position_embeddings(self) -> torch.Tensor:
        """[1, 1 (+1) + g*g, D]: the position embeddings on this image's g x g grid.

        Resized bicubically (in float32, antialiased if config.interpolate_antialias) when they
        were trained on another grid, exactly as transformers' DINOv2 does on every forward pass.
        """
        pos, config = self.position_embeddings, self.config
        if config.position_grid_size == config.grid_size:
            return pos
        keep = pos.shape[1] - config.position_grid_size**2  # CLS (and distillation) rows
        grid = rearrange(pos[:, keep:], "1 (gh gw) d -> 1 d gh gw", gh=config.position_grid_size)
        grid = F.interpolate(grid.float(), size=(config.grid_size, config.grid_size), mode="bicubic",
                             align_corners=False, antialias=config.interpolate_antialias).to(pos.dtype)
        return torch.cat([pos[:, :keep], rearrange(grid, "1 d gh gw -> 1 (gh gw) d")], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embeddings(pixel_values)  # [B, N, D]
        b = patches.shape[0]
        cls = self.tap_cls(repeat(self.cls_token, "1 1 d -> b 1 d", b=b))  # [B, 1, D]
        prefix = [cls]
        if self.config.use_distillation_token:
            prefix.append(repeat(self.distillation_token, "1 1 d -> b 1 d", b=b))
        pos = self.grid_position_embeddings()  # [1, T - registers, D]
        if self.config.num_register_tokens:  # registers sit after CLS (and DIST) with a zero position
            keep = len(prefix)
            prefix.append(repeat(self.register_tokens, "1 r d -> b r d", b=b))
            zeros = pos.new_zeros(1, self.config.num_register_tokens, pos.shape[-1])
            pos = torch.cat([pos[:, :keep], zeros, pos[:, keep:]], dim=1)
        tokens = self.tap_tokens(torch.cat([*prefix, patches], dim=1))  # [B, T, D]
        embeddings = tokens + self.tap_position(pos)  # [B, T, D]
        return self.tap_output(self.dropout(embeddings))


class ViTSelfAttention(nn.Module):
    """Queries, keys and values; softmax(q k^T / sqrt(d)) v for every head. Inside ViTAttention."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.head_dim
        self.scale = config.head_dim**-0.5
        d_model = config.hidden_size
        self.query = nn.Linear(d_model, d_model, bias=config.qkv_bias)
        self.key = nn.Linear(d_model, d_model, bias=config.qkv_bias)
        self.value = nn.Linear(d_model, d_model, bias=config.qkv_bias)
        self.softmax = nn.Softmax(dim=-1)  # a module, so a hook sees it
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.tap_q, self.tap_k, self.tap_v = Tap("q"), Tap("k"), Tap("v")
        self.tap_scores = Tap("scores")
        self.tap_probs = Tap("probs")
        self.tap_context = Tap("context")

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "b t (h d) -> b h t d", h=self.num_attention_heads)  # [B, H, T, d]

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False):
        q = self.tap_q(self.split_heads(self.query(hidden_states)))
        k = self.tap_k(self.split_heads(self.key(hidden_states)))
        v = self.tap_v(self.split_heads(self.value(hidden_states)))
        if output_attentions or is_tracing() or (self.training and self.dropout.p > 0):
            # q is scaled before the product: fewer numbers to multiply than in the [T, T] scores,
            # and it makes the contiguous copy of q that the product needs anyway.
            scores = self.tap_scores(einsum(q * self.scale, k, "b h i d, b h j d -> b h i j"))  # [B, H, T, T]
            probs = self.tap_probs(self.softmax(scores))  # each row sums to 1
            context = einsum(self.dropout(probs), v, "b h i j, b h j d -> b h i d")  # [B, H, T, d]
        else:  # nobody looks at the attention map: the fused kernel gives the same numbers, faster
            probs = None
            context = F.scaled_dot_product_attention(q, k, v)
        context = self.tap_context(rearrange(context, "b h t d -> b t (h d)"))  # [B, T, D]
        return context, probs


class ViTSelfOutput(nn.Module):
    """The output projection that mixes the heads back together (plus dropout). Inside ViTAttention."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.tap_output = Tap("attention_output")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.tap_output(self.dropout(self.dense(hidden_states)))


class ViTAttention(nn.Module):
    """Multi-head self-attention = ViTSelfAttention then ViTSelfOutput. First half of ViTLayer."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.attention = ViTSelfAttention(config)
        self.output = ViTSelfOutput(config)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False):
        context, probs = self.attention(hidden_states, output_attentions)
        return self.output(context), probs


class ViTIntermediate(nn.Module):
    """MLP expansion D -> M followed by the activation (GELU). Second half of ViTLayer."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = activation(config.hidden_act)
        self.tap_pre = Tap("mlp_pre_act")
        self.tap_post = Tap("mlp_post_act")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        pre = self.tap_pre(self.dense(hidden_states))  # [B, T, M]
        return self.tap_post(self.intermediate_act_fn(pre))


class ViTOutput(nn.Module):
    """MLP projection M -> D, dropout, and the second residual connection. End of ViTLayer."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.tap_mlp = Tap("mlp_output")

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor,
                scale: nn.Module | None = None) -> torch.Tensor:
        out = self.tap_mlp(self.dropout(self.dense(hidden_states)))  # [B, T, D]
        if scale is not None:  # layer scale (DINOv2), owned by ViTLayer
            out = scale(out)
        return out + input_tensor  # residual


class ViTLayerScale(nn.Module):
    """A learned per-channel factor on a residual branch (layer scale, DINOv2). Optional part of ViTLayer."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((config.hidden_size,), float(config.layerscale_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.lambda1


class ViTLayer(nn.Module):
    """One transformer block: x + attention(norm(x)), then + MLP(norm(.)). Repeated inside ViTEncoder."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = ViTAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.intermediate = ViTIntermediate(config)
        self.output = ViTOutput(config)
        scaled = config.layerscale_value is not None
        self.layer_scale1 = ViTLayerScale(config) if scaled else None
        self.layer_scale2 = ViTLayerScale(config) if scaled else None
        self.tap_norm1, self.tap_norm2 = Tap("layernorm_before"), Tap("layernorm_after")
        self.tap_residual = Tap("residual")
        self.tap_output = Tap("output")

    def forward(self, x: torch.Tensor, output_attentions: bool = False):
        attended, probs = self.attention(self.tap_norm1(self.layernorm_before(x)), output_attentions)
        if self.layer_scale1 is not None:
            attended = self.layer_scale1(attended)
        x = self.tap_residual(x + attended)  # first residual
        h = self.intermediate(self.tap_norm2(self.layernorm_after(x)))
        x = self.output(h, x, self.layer_scale2)  # second residual, added inside ViTOutput (as in the seed)
        return self.tap_output(x), probs


class ViTEncoder(nn.Module):
    """The stack of ViTLayers; returns every hidden state when asked. Middle block of ViTModel."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.layer = nn.ModuleList([ViTLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, x: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False):
        hidden_states, attentions = [x], []
        for layer in self.layer:
            x, probs = layer(x, output_attentions)
            hidden_states.append(x)
            attentions.append(probs)
        return x, (hidden_states if output_hidden_states else None), (attentions if output_attentions else None)


class ViTPooler(nn.Module):
    """CLS token -> dense -> tanh. Last block of ViTModel."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()
        self.tap_output = Tap("pooler")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.tap_output(self.activation(self.dense(hidden_states[:, 0])))  # [B, D]


@dataclass
class ViTOutputs:
    """What a forward pass returns (the fields of transformers' outputs that apply)."""

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class _InitMixin:
    config: ViTConfig

    def init_weights(self, seed: int | None = None) -> None:
        """Hugging Face's ViT initialisation: (truncated) normals, zero biases, unit layer norms."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.initializer_range

        def trunc(t: torch.Tensor) -> None:
            # transformers' choice: a normal with std=initializer_range truncated at +-2 (absolute)
            nn.init.trunc_normal_(t, mean=0.0, std=std, a=-2.0, b=2.0, generator=generator)

        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                trunc(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, ViTEmbeddings):
                trunc(module.cls_token)
                trunc(module.position_embeddings)
                for name in ("distillation_token", "register_tokens"):
                    if hasattr(module, name):
                        trunc(getattr(module, name))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ViTModel(_InitMixin, nn.Module):
    """ViTEmbeddings -> ViTEncoder -> final LayerNorm -> ViTPooler: pixels in, token vectors out."""

    def __init__(self, config: ViTConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = ViTEmbeddings(config)
        self.encoder = ViTEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViTPooler(config) if add_pooling_layer else None
        self.tap_layernorm = Tap("layernorm")
        self.init_weights()

    def forward(
        self, pixel_values: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False
    ) -> ViTOutputs:
        x = self.embeddings(pixel_values)  # [B, T, D]
        x, hidden_states, attentions = self.encoder(x, output_attentions, output_hidden_states)
        x = self.tap_layernorm(self.layernorm(x))  # [B, T, D]
        return ViTOutputs(
            last_hidden_state=x,
            pooler_output=self.pooler(x) if self.pooler is not None else None,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )


class ViTForImageClassification(_InitMixin, nn.Module):
    """ViTModel without pooler + a linear head on the final CLS token: pixels in, K class logits out.

    With ``config.use_distillation_head`` (DeiT with teacher) a second linear head reads the
    distillation token and the logits are the mean of the two heads' outputs.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        self.num_labels = config.num_labels
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        if config.use_distillation_head:
            self.distillation_classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.tap_logits = Tap("logits")
        for head in (self.classifier, getattr(self, "distillation_classifier", None)):
            if isinstance(head, nn.Linear):  # the encoder was initialised by ViTModel already
                nn.init.trunc_normal_(head.weight, std=config.initializer_range, a=-2.0, b=2.0)
                nn.init.zeros_(head.bias)

    def forward(
        self, pixel_values: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False
    ) -> ViTOutputs:
        out = self.vit(pixel_values, output_attentions, output_hidden_states)
        logits = self.classifier(out.last_hidden_state[:, 0])  # [B, K] from the CLS token
        if self.config.use_distillation_head:  # DeiT: average with the head on the distillation token
            logits = (logits + self.distillation_classifier(out.last_hidden_state[:, 1])) / 2
        out.logits = self.tap_logits(logits)
        return out


def backbone(model: nn.Module) -> ViTModel:
    """The ViT inside a model: ``model.vit`` for a :class:`ViTForImageClassification`, else ``model`` itself.

    The one place that knows a classifier wraps its encoder; pages, charts and training call this."""
    return getattr(model, "vit", model)
