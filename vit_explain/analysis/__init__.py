"""Numbers behind the "what has the model learned" pictures: pure functions, arrays in, arrays out.

One concern per module, every public name re-exported here (``from vit_explain.analysis import
attention_rollout``):

* :mod:`.attention`: where the CLS token looks (:func:`cls_attention_map`), attention rollout,
  mean attention distance, attention entropy, each head's share of the output, where CLS's
  attention goes.
* :mod:`.representations`: cosine similarity, position-embedding similarity, the patch-embedding
  filters' PCA, token PCA colours, token norms and high-norm artefacts, how much each layer and
  branch changes the tokens, MLP activation statistics.
* :mod:`.readout`: softmax and the logit lens.
* :mod:`.attribution`: occlusion (masks, hiding patches, sensitivity maps) and putting maps on one
  colour scale.
* :mod:`.similarity`: how alike two representations of the same examples are (centred linear CKA,
  HSIC, CKA between every layer of two models accumulated batch by batch).
* :mod:`.relevance`: the gradient-weighted attention relevance of Chefer, Gur and Wolf (2021).

Conventions used throughout:

* Token order is the ViT one: ``T = S + N`` tokens, the ``S`` prefix tokens first (CLS, then a
  distillation token or registers: ``config.num_prefix_tokens``), then ``N = g * g`` patch tokens
  in row-major order (patch ``(row, col)`` is token ``S + row * g + col``; ``S = 1`` for a plain ViT).
* Inputs may be numpy arrays or torch tensors (any device or float dtype); they are copied to
  float64 numpy before any sum, so results do not drift with long products or large grids.
  Every result is a float64 numpy array (cast to float32 before shipping it to a figure).
* A "list of layers" is any sequence of per-layer arrays (what ``Trace.attentions`` or
  ``Trace.hidden_states`` hold), or one array stacked along a leading layer axis.
* Batches: functions that produce one picture per image keep a leading batch axis when the input
  has one; functions that summarise heads or layers (distance, entropy, similarity) average over
  the batch, the way the papers average over a set of images.

Nothing here imports streamlit or plotly, and torch is only touched when a caller passes tensors
or modules in. Running the model (occluded images, one layer's taps) lives in
:mod:`vit_explain.pipeline`, which calls these functions.
"""

from __future__ import annotations

from .attention import (
    HEAD_FUSIONS,
    attention_distance_all,
    attention_distance_map,
    attention_entropy,
    attention_rollout,
    cls_attention_map,
    cls_destinations,
    cls_rollout_map,
    head_contributions,
    mean_attention_distance,
    uniform_attention_distance,
)
from .attribution import (
    apply_occlusion,
    map_correlation,
    normalise_map,
    occlusion_delta,
    occlusion_mask,
    occlusion_sensitivity,
    shared_scale,
    top_indices,
)
from .readout import logit_lens, softmax
from .relevance import attention_relevance
from .similarity import MinibatchCKA, hsic, linear_cka
from .representations import (
    NEAR_ZERO,
    activation_stats,
    active_share_map,
    cls_similarity_matrix,
    conv_as_linear,
    cosine_matrix,
    cosine_similarity,
    high_norm_mask,
    high_norm_outliers,
    layer_similarity,
    patch_filter_pca,
    position_similarity,
    position_similarity_maps,
    similarity_by_distance,
    sincos_2d_position_embeddings,
    stream_norms,
    token_mean_std,
    token_norms,
    token_pca_rgb,
    update_ratio,
)

__all__ = [
    # attention
    "cls_attention_map",
    "attention_rollout",
    "cls_rollout_map",
    "attention_distance_map",
    "mean_attention_distance",
    "attention_distance_all",
    "uniform_attention_distance",
    "attention_entropy",
    "head_contributions",
    "cls_destinations",
    # representations
    "cosine_matrix",
    "cosine_similarity",
    "sincos_2d_position_embeddings",
    "position_similarity",
    "position_similarity_maps",
    "similarity_by_distance",
    "patch_filter_pca",
    "conv_as_linear",
    "token_pca_rgb",
    "token_norms",
    "token_mean_std",
    "high_norm_mask",
    "high_norm_outliers",
    "layer_similarity",
    "cls_similarity_matrix",
    "stream_norms",
    "update_ratio",
    "activation_stats",
    "active_share_map",
    # readout
    "softmax",
    "logit_lens",
    # similarity
    "linear_cka",
    "hsic",
    "MinibatchCKA",
    # attribution
    "occlusion_delta",
    "occlusion_mask",
    "apply_occlusion",
    "occlusion_sensitivity",
    "top_indices",
    "normalise_map",
    "shared_scale",
    "map_correlation",
    # relevance
    "attention_relevance",
]
