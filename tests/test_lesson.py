"""The lesson's answer computations (vit_explain.lesson) and its figures (vit_explain.charts.lesson), without Streamlit.

Every answer is checked against a direct computation on a real model: the token count against the tokens a
forward pass makes, the numbers per token against the patch embedding's width, the most attended patch
against the attention maps, the settled depth against the logit lens, the worst head against switching each
head off by hand, the shuffle answer against running the shuffled picture.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import jitter, our_model, pixels
from vit_explain import ViTConfig, analysis, lesson
from vit_explain.charts import lesson as charts
from vit_explain.interventions import Intervention, head_importance, intervene
from vit_explain.model import ViTModel
from vit_explain.pipeline import final_norm_and_head, run_core


@pytest.fixture(scope="module")
def model():
    return our_model(seed=3)


@pytest.fixture(scope="module")
def core(model):
    return run_core(model, pixels(batch=1, seed=5))


# ---------------------------------------------------------------------------------- the steps
def test_every_model_gets_the_steps_it_can_answer():
    full = lesson.lesson_steps(classifier=True, interventions=True)
    assert 10 <= len(full) <= 14 and full[0].id == "picture" and full[-1].id == "score"
    assert sum(s.asks for s in full) >= 5
    no_head = lesson.lesson_steps(classifier=False, interventions=True)
    assert {s.id for s in full} - {s.id for s in no_head} == {"winner", "lens"}
    assert sum(s.asks for s in no_head) >= 5  # still five questions without classes
    assert [s.id for s in lesson.skipped_steps(classifier=False)] == ["winner", "lens"]
    bare = lesson.lesson_steps(classifier=True, interventions=False)
    assert not any(s.needs_interventions for s in bare) and len(bare) == len(full) - 2
    assert lesson.step_index(full, "look") == [s.id for s in full].index("look")
    with pytest.raises(ValueError):
        lesson.step_index(no_head, "winner")


# ---------------------------------------------------------------------------------- tokens and shapes
@pytest.mark.parametrize("changes, prefix", [
    ({}, 1),
    ({"use_distillation_token": True}, 2),
    ({"num_register_tokens": 4}, 5),
    ({"image_size": 48, "patch_size": 6}, 1),
])
def test_the_token_count_is_the_number_of_tokens_the_encoder_gets(changes, prefix):
    config = ViTConfig(**{**dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=40,
                                 image_size=32, patch_size=8), **changes})
    torch.manual_seed(0)
    model = ViTModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        out = model(pixels(config.image_size, batch=1))
    tokens = out.last_hidden_state.shape[1]
    assert lesson.token_count(config) == tokens == config.grid_size ** 2 + prefix


def test_numbers_per_token_is_the_patch_embedding_width(model, core):
    config = model.config
    assert lesson.width_answer(config) == core["patch_embeddings"].shape[-1] == config.hidden_size
    options = lesson.width_options(config)
    assert lesson.width_answer(config) in options and options == sorted(set(options))
    assert config.num_channels * config.patch_size ** 2 in options  # the pixel values of a patch: the usual slip


# ---------------------------------------------------------------------------------- where CLS looks
def test_the_most_attended_patch_and_the_rank_of_a_guess(model, core):
    g = model.config.grid_size
    values = lesson.cls_patch_map(core["attentions"][-1], g, model.config.num_prefix_tokens)
    by_hand = core["attentions"][-1][:, 0, 1:].mean(0)  # the CLS row over the patches, mean of the heads
    np.testing.assert_allclose(values.ravel(), by_hand / by_hand.sum(), rtol=1e-5)
    best = int(np.argmax(by_hand))
    assert lesson.patch_rank(values, best) == 1
    order = np.argsort(-by_hand, kind="stable")
    assert [lesson.patch_rank(values, p) for p in order] == list(range(1, g * g + 1))
    assert lesson.patch_rank(np.array([[0.5, 0.5], [0.0, 0.0]]), 1) == 1  # ties share the better rank
    with pytest.raises(ValueError):
        lesson.patch_rank(values, g * g)


def test_patch_distance_and_what_counts_as_a_right_click():
    assert lesson.patch_distance(0, 0, 8) == 0
    assert lesson.patch_distance(0, 9, 8) == pytest.approx(2 ** 0.5)  # one down, one right
    assert lesson.patch_distance(7, 56, 8) == pytest.approx((49 + 49) ** 0.5)
    assert lesson.good_rank(64) == 3 and lesson.good_rank(196) == 10 and lesson.good_rank(4) == 1


# ---------------------------------------------------------------------------------- the answer and the lens
def test_the_winner_and_the_settled_depth_follow_the_logit_lens(model, core):
    assert lesson.winner(core["logits"]) == int(np.argmax(core["logits"]))
    norm, head = final_norm_and_head(model)
    lens = analysis.logit_lens(core["hidden_states"][:, :1, :], norm, head, top_k=1)
    top1 = lens["top_indices"][:, 0]
    s = lesson.settled_depth(top1)
    assert all(t == top1[-1] for t in top1[s:]) and (s == 0 or top1[s - 1] != top1[-1])
    assert top1[-1] == lesson.winner(core["logits"])  # the lens' last row is the model's own answer


@pytest.mark.parametrize("top1, depth", [([3], 0), ([3, 3, 3], 0), ([1, 2, 3], 2), ([3, 1, 3, 3], 2),
                                         ([0, 0, 1], 2), ([5, 5, 4, 5, 5, 5], 3)])
def test_settled_depth(top1, depth):
    assert lesson.settled_depth(top1) == depth


def test_settled_depth_needs_a_stage():
    with pytest.raises(ValueError):
        lesson.settled_depth([])


# ---------------------------------------------------------------------------------- heads
def test_the_worst_head_is_the_one_whose_knock_out_lowers_the_answer_most(model):
    x = pixels(batch=1, seed=5)
    drops = head_importance(model, x)
    layer, head = lesson.most_harmful_head(drops)
    plain = analysis.softmax(lesson.model_answer(model, x))
    target = int(np.argmax(plain))
    by_hand = np.zeros_like(drops)
    for i in range(drops.shape[0]):
        for h in range(drops.shape[1]):
            with intervene(model, Intervention(ablate_heads={i: [h]})), torch.no_grad():
                after = analysis.softmax(model(x).logits[0].double())
            by_hand[i, h] = plain[target] - after[target]
    np.testing.assert_allclose(drops, by_hand, atol=1e-6)
    assert (layer, head) == np.unravel_index(np.argmax(by_hand), by_hand.shape)
    assert lesson.head_rank(drops, layer, head) == 1
    assert lesson.head_is_close(drops, layer, head)


def test_a_head_guess_is_close_when_it_costs_half_as_much_as_the_worst():
    drops = np.array([[0.40, 0.21], [0.19, -0.3]])
    assert lesson.most_harmful_head(drops) == (0, 0)
    assert lesson.head_is_close(drops, 0, 1) and not lesson.head_is_close(drops, 1, 0)
    assert not lesson.head_is_close(drops, 1, 1)
    assert [lesson.head_rank(drops, *lh) for lh in ((0, 0), (0, 1), (1, 0), (1, 1))] == [1, 2, 3, 4]
    assert not lesson.head_is_close(np.zeros((2, 2)), 0, 0)  # nothing hurts: no head is right


# ---------------------------------------------------------------------------------- shuffling the patches
def test_without_positions_shuffling_leaves_the_answer_and_with_them_it_moves():
    model = jitter(our_model(seed=3), 0.2)  # weights large enough that the positions steer the answer
    x = pixels(batch=1, seed=5)
    out = lesson.shuffle_experiment(model, x, seed=1)
    assert out["classifier"] and not out["changes"] and out["changes_with_positions"]
    assert sorted(out["order"]) == list(range(model.config.num_patches)) and list(out["order"]) != sorted(out["order"])
    np.testing.assert_allclose(analysis.softmax(out["shuffled"]), analysis.softmax(out["plain"]), atol=1e-5)


def test_the_shuffled_picture_is_what_the_shuffled_model_reads(model):
    """The picture with its patches laid out in ``order`` gives the model exactly what ``patch_order`` gives it."""
    x = pixels(batch=1, seed=4)
    order = lesson.shuffled_order(model.config.num_patches, seed=2)
    assert sorted(order) == list(range(16)) and list(order) != list(range(16))
    assert lesson.shuffled_order(16, seed=2) == order  # the same for the same seed
    image = x[0].permute(1, 2, 0).numpy()
    moved = torch.from_numpy(lesson.shuffle_picture(image, order, 8)).permute(2, 0, 1)[None]
    np.testing.assert_allclose(lesson.model_answer(model, moved), lesson.model_answer(model, x, Intervention(
        patch_order=order)), atol=1e-5)
    np.testing.assert_array_equal(lesson.shuffle_picture(image, range(16), 8), image)


def test_answers_differ_for_logits_and_for_feature_vectors():
    logits = np.array([2.0, 1.0, 0.5])
    assert not lesson.answers_differ(logits, logits + 1e-7, classifier=True)
    assert lesson.answers_differ(logits, logits + np.array([0.0, 0.5, 0.0]), classifier=True)
    v = np.array([1.0, 2.0, 3.0])
    assert not lesson.answers_differ(v, 2 * v, classifier=False)  # same direction: the same features
    assert lesson.answers_differ(v, v[::-1], classifier=False)


def test_a_model_without_a_classifier_answers_with_its_features():
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
                       image_size=32, patch_size=8, num_register_tokens=2)
    torch.manual_seed(1)
    model = ViTModel(config, add_pooling_layer=False).eval()
    out = lesson.shuffle_experiment(model, pixels(batch=1, seed=2))
    assert not out["classifier"] and out["plain"].shape == (32,) and not out["changes"]


# ---------------------------------------------------------------------------------- the score
def test_the_score_counts_each_question_once_and_skips_shown_answers():
    steps = lesson.lesson_steps(classifier=True)
    answers = {"tokens": lesson.Answer("k", 65, True, 65), "width": lesson.Answer("k", 48, False, 192),
               "look": lesson.Answer("k", None, False, 3), "picture": lesson.Answer("k", 1, True)}
    assert lesson.score(answers, steps) == (1, 2, sum(s.asks for s in steps))
    assert lesson.score({}, steps) == (0, 0, 7)


# ---------------------------------------------------------------------------------- the figures
def test_patches_move_into_the_token_row_in_the_browser_only():
    image = (np.arange(32 * 32 * 3) % 251).astype(np.uint8).reshape(32, 32, 3)
    fig = charts.patches_to_sequence(image, 8, ["CLS"], "From picture to tokens")
    N = 16
    assert [f.name for f in fig.frames][:2] == ["picture", "cut"] and fig.frames[-1].name == "tokens"
    assert len(fig.data) == N + 1  # one image per patch, one for CLS
    first, last = fig.frames[0], fig.frames[-1]
    # at the start the patches make the picture (touching, row by row), at the end a row of tokens after CLS
    xs0 = [first.data[n].x0 for n in range(N)]
    side = first.data[0].dx * 16  # a patch drawn 16 tile pixels wide (8 px upscaled twice)
    assert xs0[1] - xs0[0] == pytest.approx(side) and side >= 1 and first.data[N].opacity == 0  # touching
    assert last.data[0].dx * 16 == pytest.approx(1.0)  # a token is one unit wide, like the CLS tile
    ys = [last.data[n].y0 for n in range(N)]
    xs = [last.data[n].x0 for n in range(N)]
    assert len(set(np.round(ys, 6))) == 1 and np.all(np.diff(xs) > 0) and last.data[N].opacity == 1
    assert xs[0] > fig.data[N].x0  # CLS first
    buttons = fig.layout.updatemenus[0].buttons
    assert buttons[0].method == "animate" and buttons[0].args[0] is None  # plays only when pressed
    spec = json.loads(fig.to_json())
    assert "autoplay" not in json.dumps(spec["layout"]).lower()
    assert len(fig.to_json()) < 200_000


def test_the_token_rows_wrap_evenly():
    assert charts.sequence_columns(65) == 22 and charts.sequence_columns(197) == 29 and charts.sequence_columns(17) == 17
    corners = charts.token_row_positions(5, 2, top=10.0)
    assert corners[2].tolist() == [0.0, 11.25] and corners[1].tolist() == [1.25, 10.0]


def test_attention_through_the_layers_has_a_frame_and_a_slider_step_per_layer():
    rng = np.random.default_rng(0)
    maps = rng.random((6, 8, 8)).astype(np.float32)
    fig = charts.attention_through_layers(np.zeros((32, 32, 3), np.uint8), maps, "CLS by layer")
    assert [f.name for f in fig.frames] == [f"layer {i}" for i in range(6)]
    np.testing.assert_allclose(np.asarray(fig.frames[3].data[0].z), maps[3])
    assert len(fig.layout.sliders[0].steps) == 6
    assert fig.data[1].zmax == pytest.approx(float(maps.max()))  # one colour scale for every layer


def test_the_answer_map_outlines_the_answer_and_the_guess():
    values = np.zeros((4, 4), np.float32)
    values[1, 2] = 1.0
    fig = charts.answer_map(np.zeros((16, 16, 3), np.uint8), values, "map", best=6, guess=0)
    rects = [(s.x0, s.y0) for s in fig.layout.shapes]
    assert (2 * 4 - 0.5, 1 * 4 - 0.5) in rects and (-0.5, -0.5) in rects
    assert {t.name for t in fig.data if t.name} == {"most attended", "your click"}


# ---------------------------------------------------------------------------------- presenter mode
def test_presenter_mode_raises_every_figure_text_to_18_px(monkeypatch):
    import plotly.graph_objects as go

    from vit_explain.ui import presenter

    fig = go.Figure(go.Heatmap(z=[[1, 2]], texttemplate="%{z}", textfont=dict(size=12),
                               colorbar=dict(title=dict(text="weight", side="top"))),
                    layout=dict(height=300, font=dict(size=13), annotations=[dict(text="head 0", font=dict(size=12))],
                                legend=dict(orientation="h", y=-0.2), sliders=[dict(font=dict(size=13), steps=[])]))
    assert presenter.for_the_projector(fig) is fig  # off: the figure itself, untouched
    monkeypatch.setattr(presenter, "presenting", lambda: True)
    big = presenter.for_the_projector(fig).to_dict()
    layout = big["layout"]
    assert layout["font"]["size"] == 18 and layout["annotations"][0]["font"]["size"] == 18
    assert layout["xaxis"]["tickfont"]["size"] == 18 and layout["yaxis"]["title"]["font"]["size"] == 18
    assert layout["sliders"][0]["font"]["size"] == 18 and big["data"][0]["textfont"]["size"] == 18
    assert big["data"][0]["colorbar"]["title"]["side"] == "right"  # a title above the bar met its top tick
    assert layout["legend"]["y"] > 1 and layout["height"] == 360
    assert fig.layout.font.size == 13  # the original is left as it was (figures may come from a cache)
    tree = presenter.for_the_projector(go.Figure(go.Treemap(labels=["a", "b"], parents=["", "a"]))).to_dict()
    assert "xaxis" not in tree["layout"]  # no axes added to a figure that has none
    motion = charts.patches_to_sequence(np.zeros((16, 16, 3), np.uint8), 8, ["CLS"], "t")
    assert presenter.for_the_projector(motion).layout.updatemenus[0].font.size == 18


def test_presenter_styles_say_22_px_and_fold_code_and_tables():
    from vit_explain.ui import presenter

    css = presenter.PRESENTER_CSS
    assert "max(22px, 1em)" in css and '[data-testid="stCode"]' in css and ":has(table)" in css
    assert "stPlotlyChart" in css  # rows of columns holding a figure are stacked: figures full width
    assert "stSidebarCollapseButton" in presenter.CLOSE_SIDEBAR_JS and "st-key-view-presenter" in presenter.CLOSE_SIDEBAR_JS
