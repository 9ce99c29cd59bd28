"""trace(): every tap, the transformers meaning of hidden_states/attentions, no side effects, thread safety."""

import threading

import pytest
import torch
from einops import rearrange

from helpers import jitter, pixels
from vit_explain import ViTConfig, ViTForImageClassification, ViTModel
from vit_explain.capture import Tap, trace

CFG = dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=80, image_size=32, patch_size=8,
           num_labels=5)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return jitter(ViTForImageClassification(ViTConfig(**CFG)).eval())


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_every_tap_has_its_documented_shape(model):
    x = pixels(batch=2, seed=0)
    t = trace(model, x)
    B, N, D, H, d, M, L, K = 2, 16, 48, 4, 12, 80, 3, 5
    T = N + 1
    expected = {
        "patches": (B, N, 3 * 8 * 8), "patch_embeddings": (B, N, D), "cls_token": (B, 1, D),
        "tokens_with_cls": (B, T, D), "position_embeddings": (1, T, D), "embeddings": (B, T, D),
        "layernorm": (B, T, D), "logits": (B, K),
    }
    for i in range(L):
        expected.update({
            f"layer.{i}.layernorm_before": (B, T, D), f"layer.{i}.q": (B, H, T, d), f"layer.{i}.k": (B, H, T, d),
            f"layer.{i}.v": (B, H, T, d), f"layer.{i}.scores": (B, H, T, T), f"layer.{i}.probs": (B, H, T, T),
            f"layer.{i}.context": (B, T, D), f"layer.{i}.attention_output": (B, T, D), f"layer.{i}.residual": (B, T, D),
            f"layer.{i}.layernorm_after": (B, T, D), f"layer.{i}.mlp_pre_act": (B, T, M),
            f"layer.{i}.mlp_post_act": (B, T, M), f"layer.{i}.mlp_output": (B, T, D), f"layer.{i}.output": (B, T, D),
        })
    assert {k: tuple(v.shape) for k, v in t.tensors.items()} == expected
    assert len(t.hidden_states) == L + 1 and len(t.attentions) == L
    assert t.pooler_output is None and t.logits.shape == (B, K)


def test_taps_are_consistent_with_the_maths(model):
    x = pixels(batch=1, seed=1)
    t = trace(model, x)
    tensors = t.tensors
    # raw patches: the (c, p1, p2) flattening of each 8x8 patch in row-major grid order
    assert torch.equal(tensors["patches"][0, 5], x[0, :, 8:16, 8:16].reshape(-1))
    # the conv is a linear map of each patch's pixels
    proj = model.vit.embeddings.patch_embeddings.projection
    linear = tensors["patches"] @ proj.weight.reshape(48, -1).T + proj.bias
    torch.testing.assert_close(linear, tensors["patch_embeddings"], atol=1e-5, rtol=0)
    torch.testing.assert_close(tensors["tokens_with_cls"] + tensors["position_embeddings"], tensors["embeddings"])
    for i in range(3):
        layer = t.layer(i)
        scores = layer["q"] @ layer["k"].transpose(-1, -2) / 12**0.5
        torch.testing.assert_close(scores, layer["scores"], atol=1e-5, rtol=0)
        torch.testing.assert_close(layer["probs"], scores.softmax(-1), atol=1e-6, rtol=0)
        torch.testing.assert_close(layer["probs"].sum(-1), torch.ones(1, 4, 17), atol=1e-6, rtol=0)
        assert (layer["probs"] >= 0).all()
        torch.testing.assert_close(rearrange(layer["probs"] @ layer["v"], "b h t d -> b t (h d)"), layer["context"])
        prev = t.hidden_states[i]
        torch.testing.assert_close(layer["residual"], prev + layer["attention_output"])
        torch.testing.assert_close(layer["mlp_post_act"], torch.nn.functional.gelu(layer["mlp_pre_act"]))
        torch.testing.assert_close(layer["output"], layer["residual"] + layer["mlp_output"])
        assert layer["output"] is t.hidden_states[i + 1]
        assert layer["probs"] is t.attentions[i]


def test_output_unchanged_and_no_hook_left(model):
    x = pixels(batch=3, seed=2)
    before = hook_count(model)
    with torch.no_grad():
        plain = model(x).logits
    t = trace(model, x)
    assert hook_count(model) == before == 0
    assert torch.equal(plain, model(x).logits)
    torch.testing.assert_close(t.logits, plain, atol=1e-6, rtol=0)


def test_no_hook_left_after_an_exception(model):
    with pytest.raises(ValueError):
        trace(model, torch.randn(1, 3, 20, 20))  # wrong size: raises inside forward
    assert hook_count(model) == 0
    from vit_explain.capture import is_tracing
    assert not is_tracing()


def test_base_model_with_pooler():
    m = ViTModel(ViTConfig(**CFG)).eval()
    t = trace(m, pixels(batch=1, seed=3))
    assert t.logits is None and t.pooler_output.shape == (1, 48)
    torch.testing.assert_close(t.pooler_output, torch.tanh(m.pooler.dense(t.last_hidden_state[:, 0])))


def test_capture_only_some_layers_or_taps(model):
    x = pixels(batch=1, seed=4)
    full = trace(model, x)
    some = trace(model, x, layers=[1])
    assert some.attentions[0] is None and some.attentions[2] is None
    torch.testing.assert_close(some.attentions[1], full.attentions[1])
    assert "layer.1.q" in some.tensors and "layer.0.q" not in some.tensors
    assert all(torch.equal(a, b) for a, b in zip(some.hidden_states, full.hidden_states))
    only_q = trace(model, x, taps=["q", "patches"])
    extra = {k for k in only_q.tensors if not k.endswith((".q", "patches"))}
    assert extra == {"embeddings", "layernorm", "logits"} | {f"layer.{i}.{n}" for i in range(3) for n in ("output", "probs")}
    assert len(only_q.tensors) < len(full.tensors) / 3
    core = {"embeddings", "layernorm", "logits"} | {f"layer.{i}.{n}" for i in range(3) for n in ("output", "probs")}
    assert set(trace(model, x, taps=()).tensors) == core  # no patterns: the core taps only
    globbed = trace(model, x, layers=[0, 2], taps=["mlp_*", "layer.2.q"])
    assert set(globbed.tensors) - core == {"layer.0.mlp_pre_act", "layer.0.mlp_post_act", "layer.0.mlp_output",
                                           "layer.2.mlp_pre_act", "layer.2.mlp_post_act", "layer.2.mlp_output",
                                           "layer.2.q"}
    assert "layer.1.probs" not in globbed.tensors and globbed.attentions[1] is None
    assert not full.tensors["position_embeddings"].requires_grad  # a parameter, handed back detached


def test_threads_each_get_their_own_tensors(model):
    n_threads, per_thread = 8, 25
    inputs = {(i, j): pixels(batch=1, seed=100 + i * per_thread + j) for i in range(n_threads) for j in range(per_thread)}
    reference = {key: trace(model, x) for key, x in inputs.items()}
    errors, results = [], {}
    barrier = threading.Barrier(n_threads)

    def work(i):
        try:
            barrier.wait()
            for j in range(per_thread):
                results[(i, j)] = trace(model, inputs[(i, j)])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(results) == n_threads * per_thread
    for key, got in results.items():
        ref = reference[key]
        assert set(got.tensors) == set(ref.tensors)
        for name in ("patches", "layer.0.q", "layer.2.probs", "logits"):
            torch.testing.assert_close(got.tensors[name], ref.tensors[name], atol=1e-6, rtol=0)
    assert hook_count(model) == 0


def test_tap_is_an_identity():
    x = torch.randn(3, 4)
    assert Tap("anything")(x) is x


def test_trace_layer_reproduces_one_layer_of_the_full_trace(model):
    from vit_explain.capture import trace_layer

    x = pixels(batch=1, seed=5)
    full = trace(model, x)
    for i in range(3):
        alone = trace_layer(model, i, full.hidden_states[i])
        assert set(alone) == set(full.layer(i))
        for name, value in alone.items():
            torch.testing.assert_close(value, full.layer(i)[name], atol=1e-6, rtol=0)
    assert hook_count(model) == 0
