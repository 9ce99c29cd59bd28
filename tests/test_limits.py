"""The size limits, stated and enforced.

The limits: at most ``pipeline.MAX_TOKENS`` = 1025 tokens, i.e. a 32 x 32 patch grid plus CLS
(image 384 with patch 12, image 224 with patch 7, image 64 with patch 2), and at most
``pipeline.MAX_ATTENTION_BYTES`` (384 MiB) of attention maps over all layers and heads. Why: every
attention map is tokens x tokens per head per layer, so its memory grows with the square of the
token count. What the user sees beyond them: the sidebar never offers a patch size past the token
limit (its help says so), and ``check_token_budget`` (called by the sidebar and by ``run_core``
itself) refuses anything larger with a message that gives the reason and the fix.
"""

from __future__ import annotations

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app_helpers import ok, small_session
from vit_explain import ViTConfig, ViTModel
from vit_explain import ui
from vit_explain.pipeline import MAX_ATTENTION_BYTES, MAX_TOKENS, attention_memory_bytes, check_token_budget, run_core


def tokens(image_size: int, patch_size: int) -> int:
    return (image_size // patch_size) ** 2 + 1


def test_the_limit_is_a_32_by_32_grid():
    assert MAX_TOKENS == 32 * 32 + 1
    for image_size, patch_size in [(384, 12), (224, 7), (64, 2), (32, 1)]:
        # the bundled model's shape (4 layers x 4 heads): only the token limit applies
        config = ViTConfig(image_size=image_size, patch_size=patch_size, num_hidden_layers=4, num_attention_heads=4)
        assert config.num_tokens == MAX_TOKENS
        check_token_budget(config)  # exactly at the limit: allowed


@pytest.mark.parametrize("image_size,patch_size", [(384, 8), (224, 4), (96, 2), (384, 6)])
def test_beyond_the_limit_is_refused_with_the_reason_and_the_fix(image_size, patch_size):
    config = ViTConfig(image_size=image_size, patch_size=patch_size, num_hidden_layers=1, num_attention_heads=1)
    assert config.num_tokens > MAX_TOKENS
    with pytest.raises(ValueError) as info:
        check_token_budget(config)
    message = str(info.value)
    assert f"{config.num_tokens} tokens" in message and str(MAX_TOKENS) in message
    assert "square" in message and "memory" in message  # why
    assert "larger patch size" in message and "smaller image" in message  # what to do
    assert "Traceback" not in message


def test_attention_memory_grows_with_the_square_of_the_tokens():
    small = ViTConfig(image_size=224, patch_size=32)  # 50 tokens
    for patch in (16, 8):
        big = small.replace(patch_size=patch)
        ratio = attention_memory_bytes(big) / attention_memory_bytes(small)
        assert ratio == pytest.approx((big.num_tokens / small.num_tokens) ** 2)
    # ViT-B/16 at 224 (197 tokens): scores + probabilities of all 12 x 12 maps, float32
    assert attention_memory_bytes(ViTConfig()) == 2 * 4 * 12 * 12 * 197 * 197


def test_vit_b_fits_at_384_but_needs_fewer_layers_with_small_patches():
    check_token_budget(ViTConfig(image_size=384, patch_size=16))  # google/vit-base-patch16-384: 577 tokens
    assert attention_memory_bytes(ViTConfig(image_size=384)) <= MAX_ATTENTION_BYTES

    config = ViTConfig(image_size=224, patch_size=8)  # 785 tokens, under the token limit
    assert config.num_tokens <= MAX_TOKENS and attention_memory_bytes(config) > MAX_ATTENTION_BYTES
    with pytest.raises(ValueError) as info:
        check_token_budget(config)
    message = str(info.value)
    assert "12 layers x 12 heads" in message and "677 MB" in message and "384 MB" in message  # how much
    assert "square of the token count" in message  # why
    assert "fewer layers (at most 6 here) or fewer heads" in message  # what to do
    check_token_budget(config.replace(num_hidden_layers=6))  # and the advice is right
    with pytest.raises(ValueError):
        check_token_budget(config.replace(num_hidden_layers=7))


def test_one_layer_too_big_asks_for_fewer_heads():
    config = ViTConfig(image_size=64, patch_size=2, hidden_size=64, num_attention_heads=64, intermediate_size=64,
                       num_hidden_layers=1)  # 1025 tokens, 64 heads: 513 MiB in one layer
    with pytest.raises(ValueError, match="Use fewer heads"):
        check_token_budget(config)
    check_token_budget(config.replace(num_attention_heads=32))


def test_run_core_refuses_too_many_tokens_itself():
    """The last line of defence: even a caller that skips the sidebar cannot run past the limit."""
    config = ViTConfig(image_size=96, patch_size=2, hidden_size=8, num_attention_heads=1,
                       num_hidden_layers=1, intermediate_size=8)
    model = ViTModel(config, add_pooling_layer=False).eval()
    with pytest.raises(ValueError, match="square of the token count"):
        run_core(model, torch.zeros(1, 3, 96, 96))

    ok = config.replace(image_size=64)  # 1025 tokens: allowed
    out = run_core(ViTModel(ok, add_pooling_layer=False).eval(), torch.zeros(1, 3, 64, 64))
    assert out["attentions"].shape == (1, 1, MAX_TOKENS, MAX_TOKENS)


# ------------------------------------------------------------------------------------------
# the sidebar never offers a patch size beyond the limit
# ------------------------------------------------------------------------------------------


def small_random_session() -> AppTest:
    # Seeded so the first run does not build ViT-B/16 (only a speed-up: the sliders set below decide).
    arch = {"hidden_size": 32, "num_layers": 1, "num_heads": 1, "mlp_size": 32, "image_size": 64, "patch_size": 16}
    at = small_session(arch)
    at.sidebar.selectbox(key="w:model_choice").set_value("random").run()
    for key in ("hidden_size", "num_layers", "num_heads", "mlp_size"):
        at.sidebar.select_slider(key=f"w:{key}").set_value(arch[key]).run()
    return ok(at)


def test_sidebar_offers_only_patch_sizes_within_the_limit():
    at = small_random_session()
    seen_limit = []
    for image_size in ui.IMAGE_SIZES:
        at.sidebar.select_slider(key="w:image_size").set_value(image_size).run()
        assert not at.exception and not at.error
        slider = at.sidebar.select_slider(key="w:patch_size")
        offered = [int(p) for p in slider.options]
        assert offered, image_size
        assert all(image_size % p == 0 for p in offered)  # the grid always fits exactly
        assert all(tokens(image_size, p) <= MAX_TOKENS for p in offered), (image_size, offered)
        # and nothing allowed is withheld: every divisor (up to half the image) within the limit is offered
        allowed = [p for p in range(2, image_size // 2 + 1) if image_size % p == 0 and tokens(image_size, p) <= MAX_TOKENS]
        assert offered == allowed, (image_size, offered, allowed)
        assert str(MAX_TOKENS) in slider.help
        seen_limit.append(max(tokens(image_size, p) for p in offered))
        metric = [m for m in at.sidebar.metric if m.label == "Tokens"][0]
        assert int(metric.value.replace(",", "")) == tokens(image_size, int(slider.value))

    # At 384 the smallest patch is 12: exactly the limit. Choosing it runs, with no message.
    at.sidebar.select_slider(key="w:image_size").set_value(384).run()
    assert min(int(p) for p in at.sidebar.select_slider(key="w:patch_size").options) == 12
    at.sidebar.select_slider(key="w:patch_size").set_value(12).run()
    assert not at.exception and not at.error
    assert [m for m in at.sidebar.metric if m.label == "Tokens"][0].value == f"{MAX_TOKENS:,}"
    assert MAX_TOKENS in seen_limit  # the limit is reachable, not only respected


def test_sidebar_refuses_too_much_attention_memory_and_runs_once_it_fits():
    at = small_random_session()
    at.sidebar.select_slider(key="w:image_size").set_value(64).run()
    at.sidebar.select_slider(key="w:patch_size").set_value(2).run()  # 1025 tokens: allowed alone
    assert not at.error
    at.sidebar.select_slider(key="w:num_heads").set_value(32).run()
    at.sidebar.select_slider(key="w:num_layers").set_value(2).run()  # 2 x 32 maps of 1025^2: 513 MiB
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert "2 layers x 32 heads" in message and "at most 1 layers" not in message
    assert "fewer layers (at most 1 here)" in message and "square of the token count" in message
    # the page still runs, at the last settings that fit, and says so
    assert at.title and "last settings that ran" in message and "1 layer x 32 heads" in message
    memory = [m for m in at.sidebar.metric if m.label == "Attention"][0].value
    assert memory == "513.0 MB"  # the sidebar shows the figure the limit is about

    at.sidebar.select_slider(key="w:num_layers").set_value(1).run()
    assert not at.exception and not at.error and at.title
