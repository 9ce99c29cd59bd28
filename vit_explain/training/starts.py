"""Where a fresh model starts: the architecture of the shipped models and their starting weights."""

from __future__ import annotations

import math

import torch

from ..config import ViTConfig
from ..model import ViTForImageClassification, backbone
from ..synthetic import CLASS_NAMES

__all__ = ["default_config", "init_sincos_positions", "init_mimetic_attention", "fresh_model"]


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


def fresh_model(config: ViTConfig, *, seed: int = 0, position_init: str = "sincos", attention_init: str = "normal",
                probe: torch.Tensor | None = None) -> ViTForImageClassification:
    """A new model for a run seeded ``seed``: Hugging Face's initialisation, then the chosen starts.

    ``attention_init="mimetic"``: :func:`init_mimetic_attention`; ``position_init="sincos"``:
    :func:`init_sincos_positions` scaled on the pixel values ``probe`` (some training pictures).
    """
    torch.manual_seed(seed)
    model = ViTForImageClassification(config)
    model.init_weights(seed=seed)
    if attention_init == "mimetic":
        init_mimetic_attention(model, seed=seed)
    elif attention_init != "normal":
        raise ValueError(f"attention_init must be 'normal' or 'mimetic', got {attention_init!r}")
    if position_init == "sincos":
        init_sincos_positions(model, probe)
    elif position_init != "random":
        raise ValueError(f"position_init must be 'sincos' or 'random', got {position_init!r}")
    return model


def init_sincos_positions(model: ViTForImageClassification, pixel_values: torch.Tensor | None = None) -> None:
    """Start the learned position embeddings at 2-D sine-cosine values (CLS row left as it was).

    The sines are scaled to the spread of the patch embeddings at initialisation (measured on
    ``pixel_values`` when given), so the token starts as an even mix of "what" and "where". Only
    the starting values change: the embeddings are still trained, and the checkpoint format is the
    usual one.
    """
    from ..analysis import sincos_2d_position_embeddings

    config = model.config
    table = torch.from_numpy(sincos_2d_position_embeddings(config.grid_size, config.hidden_size)).float()
    embeddings = backbone(model).embeddings
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
        for layer in backbone(model).encoder.layer:
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
