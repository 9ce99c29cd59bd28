"""Interventions (vit_explain.interventions) and gradient relevance (analysis.attention_relevance) against
independent references built on transformers' own models.

Each reference changes transformers' model by other means than ours: a forward pre-hook on the output
projection that zeroes a head's slice of the context, the position-embedding parameter zeroed, the
picture's patches rearranged in pixel space, a forward hook that drops a residual branch, and the
published relevance rule written out in torch on transformers' eager attention maps and their gradients.
Small random models (every parameter random, so nothing passes by being 0 or 1), float32, atol 1e-5.
"""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
import torch
from einops import rearrange

from helpers import our_model, pixels
from vit_explain import ViTConfig, ViTModel, analysis
from vit_explain.capture import trace
from vit_explain.experiments import layer_sweep, rearrange_patches, run_intervention, shuffled_order
from helpers import HF_SMALL, randomise
from vit_explain.interventions import Intervention, head_importance, intervene
from vit_explain.weights import load_checkpoint

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
SMALL = HF_SMALL


def vit_classifier():
    config = transformers.ViTConfig(**SMALL, intermediate_size=37, image_size=32, patch_size=8, num_labels=5)
    return randomise(transformers.ViTForImageClassification(config)), 32, 8


def distilled_deit():
    config = transformers.DeiTConfig(**SMALL, intermediate_size=48, image_size=32, patch_size=8, num_labels=5)
    return randomise(transformers.DeiTForImageClassificationWithTeacher(config)), 32, 8


def dinov2_registers():
    config = transformers.Dinov2WithRegistersConfig(**SMALL, image_size=56, patch_size=14, mlp_ratio=2,
                                                   num_register_tokens=4)
    return randomise(transformers.Dinov2WithRegistersModel(config)), 56, 14


FAMILIES = {"vit": vit_classifier, "distilled_deit": distilled_deit, "dinov2_registers": dinov2_registers}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pair(request, tmp_path_factory):
    """(transformers' model, ours loaded from its save_pretrained folder, image size, patch size)."""
    theirs, size, patch = FAMILIES[request.param]()
    folder = tmp_path_factory.mktemp(request.param)
    theirs.save_pretrained(folder)
    return theirs, load_checkpoint(folder), size, patch


@pytest.fixture(scope="module")
def vit_pair(tmp_path_factory):
    theirs, size, patch = vit_classifier()
    folder = tmp_path_factory.mktemp("vit")
    theirs.save_pretrained(folder)
    return theirs, load_checkpoint(folder), size, patch


# ------------------------------------------------------------------------------------------ references
def hf_layers(model) -> list[torch.nn.Module]:
    """transformers' encoder layers in order, whatever the family calls their list (``layers`` or ``encoder.layer``)."""
    found = {}
    for name, module in model.named_modules():
        match = re.search(r"(?:^|\.)(?:layers|layer)\.(\d+)$", name)
        if match:
            found[int(match.group(1))] = module
    return [found[i] for i in sorted(found)]


def hf_answer(model, x):
    with torch.no_grad():
        out = model(pixel_values=x)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def our_answer(model, x):
    with torch.no_grad():
        out = model(x)
    return out.logits if out.logits is not None else out.last_hidden_state


def close(a, b, atol=ATOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a - b).abs().max().item() <= atol, (a - b).abs().max().item()


def with_hooks(model, hooks):
    """Register (module, kind, fn) hooks, return their handles."""
    handles = []
    for module, kind, fn in hooks:
        register = module.register_forward_pre_hook if kind == "pre" else module.register_forward_hook
        handles.append(register(fn))
    return handles


def zero_heads_hook(heads, head_dim):
    """Pre-hook on the output projection: the context's slices of ``heads`` become 0."""
    def hook(_module, args):
        context = args[0].clone()
        for h in heads:
            context[..., h * head_dim:(h + 1) * head_dim] = 0.0
        return (context,)
    return hook


def permute_pixels(x: torch.Tensor, order, patch: int) -> torch.Tensor:
    """The pictures with their patches laid out in ``order``: patch j of the result is patch order[j]."""
    g = x.shape[-1] // patch
    cut = x.reshape(x.shape[0], x.shape[1], g, patch, g, patch).permute(0, 2, 4, 1, 3, 5).reshape(x.shape[0], g * g, -1)
    laid = cut[:, list(order)].reshape(x.shape[0], g, g, x.shape[1], patch, patch)
    return laid.permute(0, 3, 1, 4, 2, 5).reshape(x.shape)


# ------------------------------------------------------------------------------------------ against transformers
def test_ablated_heads_equal_transformers_with_the_context_slice_zeroed(pair):
    theirs, ours, size, _ = pair
    x = pixels(size)
    head_dim = ours.config.head_dim
    layers = hf_layers(theirs)
    handles = with_hooks(theirs, [(layers[0].attention.o_proj, "pre", zero_heads_hook([1], head_dim)),
                                  (layers[1].attention.o_proj, "pre", zero_heads_hook([0, 3], head_dim))])
    try:
        want = hf_answer(theirs, x)
    finally:
        for h in handles:
            h.remove()
    with intervene(ours, Intervention(ablate_heads={0: [1], 1: [3, 0]})):
        got = our_answer(ours, x)
        traced = trace(ours, x)  # the step-by-step path gives the same
    close(got, want)
    close(traced.logits if traced.logits is not None else traced.last_hidden_state, want)
    assert (got - our_answer(ours, x)).abs().max() > 1e-3  # the heads mattered: the test can fail


def test_positions_removed_equal_transformers_with_the_parameter_zeroed(pair):
    theirs, ours, size, _ = pair
    x = pixels(size)
    positions = theirs.get_submodule(next(n for n, _ in theirs.named_parameters()
                                          if n.endswith("embeddings.position_embeddings")).rsplit(".", 1)[0])
    saved = positions.position_embeddings.detach().clone()
    with torch.no_grad():
        positions.position_embeddings.zero_()
    try:
        want = hf_answer(theirs, x)
    finally:
        with torch.no_grad():
            positions.position_embeddings.copy_(saved)
    with intervene(ours, Intervention(positions="remove")):
        got = our_answer(ours, x)
        traced = trace(ours, x)
    close(got, want)
    assert torch.count_nonzero(traced.tensors["position_embeddings"]) == 0  # the trace sees what was added


def test_patch_order_equals_transformers_on_the_rearranged_picture(pair):
    theirs, ours, size, patch = pair
    x = pixels(size)
    order = shuffled_order(ours.config.num_patches, seed=3)
    want = hf_answer(theirs, permute_pixels(x, order, patch))
    with intervene(ours, Intervention(patch_order=order)):
        got = our_answer(ours, x)
        traced = trace(ours, x, taps=("patches",))
    close(got, want)
    plain = trace(ours, x, taps=("patches",))
    torch.testing.assert_close(traced.tensors["patches"], plain.tensors["patches"][:, list(order)], atol=0, rtol=0)


def test_without_positions_a_shuffled_picture_gives_the_same_cls_output(pair):
    _, ours, size, _ = pair
    x = pixels(size)
    order = shuffled_order(ours.config.num_patches, seed=5)
    with intervene(ours, Intervention(positions="remove")):
        plain = trace(ours, x)
    with intervene(ours, Intervention(positions="remove", patch_order=order)):
        shuffled = trace(ours, x)
    close(shuffled.last_hidden_state[:, 0], plain.last_hidden_state[:, 0])
    if plain.logits is not None:
        close(shuffled.logits, plain.logits)
    # with the positions kept, the same shuffle changes the answer
    kept = trace(ours, x)
    with intervene(ours, Intervention(patch_order=order)):
        kept_shuffled = trace(ours, x)
    assert (kept.last_hidden_state[:, 0] - kept_shuffled.last_hidden_state[:, 0]).abs().max() > 1e-4  # noise: ~1e-7


def test_skipped_branches_equal_transformers_with_the_branch_dropped(pair):
    theirs, ours, size, _ = pair
    x = pixels(size)
    layers = hf_layers(theirs)

    def zero_attention(_module, _args, output):
        return (torch.zeros_like(output[0]),) + tuple(output[1:])

    def zero_mlp(_module, _args, output):
        return torch.zeros_like(output)

    for spec, hooks in ((Intervention(skip_attention=[1]), [(layers[1].attention, "post", zero_attention)]),
                        (Intervention(skip_mlp=[0]), [(layers[0].mlp, "post", zero_mlp)]),
                        (Intervention(skip_layers=[0]), [(layers[0].attention, "post", zero_attention),
                                                         (layers[0].mlp, "post", zero_mlp)])):
        handles = with_hooks(theirs, hooks)
        try:
            want = hf_answer(theirs, x)
        finally:
            for h in handles:
                h.remove()
        with intervene(ours, spec):
            got = our_answer(ours, x)
        close(got, want)


def test_a_skipped_layer_returns_its_input_bit_for_bit(pair):
    _, ours, size, _ = pair
    x = pixels(size)
    with intervene(ours, Intervention(skip_layers=[1])):
        t = trace(ours, x)
    assert torch.equal(t.hidden_states[2], t.hidden_states[1])
    with intervene(ours, Intervention(skip_attention=[0])):
        t = trace(ours, x)
    assert torch.equal(t.tensors["layer.0.residual"], t.hidden_states[0])


def test_the_empty_intervention_is_bit_identical(pair):
    _, ours, size, _ = pair
    x = pixels(size)
    plain_fast, plain = our_answer(ours, x), trace(ours, x)
    for spec in (Intervention(), Intervention(ablate_heads={0: []}, positions="keep",
                                              patch_order=range(ours.config.num_patches))):
        assert spec.is_identity
        with intervene(ours, spec):
            fast, traced = our_answer(ours, x), trace(ours, x)
        assert torch.equal(fast, plain_fast)
        assert traced.tensors.keys() == plain.tensors.keys()
        for key, value in plain.tensors.items():
            assert torch.equal(traced.tensors[key], value), key


# ------------------------------------------------------------------------------------------ relevance
def published_relevance(model, x, target, num_prefix):
    """Chefer, Gur and Wolf (2021), the rule for self-attention encoders, on transformers' eager attentions."""
    out = model(pixel_values=x, output_attentions=True)
    attentions = out.attentions
    for a in attentions:
        a.retain_grad()
    model.zero_grad()
    out.logits[0, target].backward()
    T = attentions[0].shape[-1]
    R = torch.eye(T, dtype=torch.float64)
    for a in attentions:
        cam = (a.grad[0].double() * a[0].detach().double()).clamp(min=0).mean(dim=0)
        R = R + cam @ R
    g = int(round((T - num_prefix) ** 0.5))
    return R[0, num_prefix:].reshape(g, g).numpy()


@pytest.mark.parametrize("family", ["vit", "distilled_deit"])
def test_relevance_equals_the_published_rule_on_transformers(family, tmp_path):
    theirs, size, _ = FAMILIES[family]()
    theirs.save_pretrained(tmp_path)
    ours = load_checkpoint(tmp_path)
    x = pixels(size, batch=1, seed=4)
    with torch.no_grad():
        logits = theirs(pixel_values=x).logits[0]
    for target in (int(logits.argmax()), int(logits.argmin())):
        want = published_relevance(theirs, x, target, ours.config.num_prefix_tokens)
        got = analysis.attention_relevance(ours, x, target)
        assert got.shape == want.shape == (ours.config.grid_size,) * 2
        np.testing.assert_allclose(got, want, atol=ATOL * max(1.0, float(np.abs(want).max())), rtol=0)
        assert np.abs(want).max() > 1e-3  # not all zero
    # the default target is the predicted class
    np.testing.assert_array_equal(analysis.attention_relevance(ours, x),
                                  analysis.attention_relevance(ours, x, int(logits.argmax())))
    assert all(p.grad is None for p in ours.parameters())  # no parameter gradient left behind


def test_relevance_with_frozen_weights_and_without_a_classifier():
    model = our_model(seed=2)
    x = pixels(32, batch=1)
    want = analysis.attention_relevance(model, x)
    for p in model.parameters():
        p.requires_grad_(False)
    np.testing.assert_allclose(analysis.attention_relevance(model, x), want, atol=1e-12)
    with pytest.raises(ValueError, match="no classifier"):
        analysis.attention_relevance(ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32,
                                                        num_attention_heads=2, num_hidden_layers=1)), x)


# ------------------------------------------------------------------------------------------ head importance, sweep
def test_head_importance_equals_one_ablation_at_a_time(pair):
    _, ours, size, _ = pair
    x = pixels(size, batch=1, seed=2)
    L, H = ours.config.num_hidden_layers, ours.config.num_attention_heads
    calls = []
    got = head_importance(ours, x, progress=lambda done, total: calls.append((done, total)))
    assert got.shape == (L, H) and calls[-1] == (L, L)
    plain = our_answer(ours, x)
    classify = isinstance(getattr(ours, "classifier", None), torch.nn.Linear)
    if classify:
        p = torch.softmax(plain.double(), -1)[0]
        target = int(p.argmax())
    for layer in range(L):
        for head in range(H):
            with intervene(ours, Intervention(ablate_heads={layer: [head]})):
                with torch.no_grad():
                    out = ours(x)
            if classify:
                want = float(p[target] - torch.softmax(out.logits.double(), -1)[0, target])
            else:
                feature = out.last_hidden_state[0, 0]
                want = 1 - float(analysis.cosine_similarity(feature, ours(x).last_hidden_state[0, 0].detach()))
            assert got[layer, head] == pytest.approx(want, abs=2e-6), (layer, head)
    assert np.abs(got).max() > 1e-4


def test_head_importance_for_another_target_and_a_pooler_model():
    model = our_model(seed=4)
    x = pixels(32, batch=1)
    for target in range(3):
        got = head_importance(model, x, target=target)
        with intervene(model, Intervention(ablate_heads={1: [2]})), torch.no_grad():
            after = torch.softmax(model(x).logits.double(), -1)[0, target]
        with torch.no_grad():
            before = torch.softmax(model(x).logits.double(), -1)[0, target]
        assert got[1, 2] == pytest.approx(float(before - after), abs=2e-6)
    with pytest.raises(ValueError, match="class index"):
        head_importance(model, x, target=99)
    pooled = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_attention_heads=4,
                                num_hidden_layers=2, intermediate_size=37), add_pooling_layer=True).eval()
    got = head_importance(pooled, x)
    with intervene(pooled, Intervention(ablate_heads={0: [3]})), torch.no_grad():
        after = pooled(x).pooler_output[0]
    with torch.no_grad():
        before = pooled(x).pooler_output[0]
    assert got[0, 3] == pytest.approx(1 - float(analysis.cosine_similarity(after, before)), abs=1e-6)


def test_layer_sweep_equals_one_skip_at_a_time(vit_pair):
    _, ours, size, _ = vit_pair
    x = pixels(size, batch=1, seed=6)
    sweep = layer_sweep(ours, x)
    target = int(sweep["target"])
    for row, name in enumerate(("skip_layers", "skip_attention", "skip_mlp")):
        for layer in range(ours.config.num_hidden_layers):
            with intervene(ours, Intervention(**{name: [layer]})), torch.no_grad():
                p = torch.softmax(ours(x).logits.double(), -1)[0, target]
            assert sweep["score"][row, layer] == pytest.approx(float(p), abs=2e-6), (name, layer)
    with torch.no_grad():
        assert float(sweep["plain"]) == pytest.approx(float(torch.softmax(ours(x).logits.double(), -1)[0, target]),
                                                      abs=1e-6)


def test_run_intervention_gives_the_pages_arrays(vit_pair):
    _, ours, size, patch = vit_pair
    x = pixels(size, batch=1)
    order = shuffled_order(ours.config.num_patches, seed=1)
    out = run_intervention(ours, x, Intervention(patch_order=order))
    g, L, H = ours.config.grid_size, ours.config.num_hidden_layers, ours.config.num_attention_heads
    assert out["answer"].shape == (5,) and out["cls_attention"].shape == out["rollout"].shape == (g, g)
    assert out["head_cls_attention"].shape == (L, H, g, g) and out["lens"].shape == (L + 1, 5)
    assert all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_allclose(out["lens"][-1], analysis.softmax(out["answer"]), atol=1e-5)
    want = hf_answer(vit_pair[0], permute_pixels(x, order, patch))[0].numpy()
    np.testing.assert_allclose(out["answer"], want, atol=ATOL)
    # the shuffled picture as the page shows it: the same rearrangement in pixel space
    image = np.arange(size * size * 3, dtype=np.int64).reshape(size, size, 3)
    as_tensor = torch.from_numpy(image).permute(2, 0, 1)[None]
    np.testing.assert_array_equal(rearrange_patches(image, order, patch),
                                  permute_pixels(as_tensor, order, patch)[0].permute(1, 2, 0).numpy())


# ------------------------------------------------------------------------------------------ threads
def test_threads_running_different_interventions_get_their_own_results(vit_pair):
    _, ours, size, _ = vit_pair
    x = pixels(size, batch=1)
    N = ours.config.num_patches
    specs = [Intervention(), Intervention(ablate_heads={0: [0, 1]}), Intervention(skip_layers=[1]),
             Intervention(positions="remove"), Intervention(patch_order=shuffled_order(N, 2)),
             Intervention(skip_mlp=[0], ablate_heads={1: [3]}), None]  # None: a plain trace, no block at all

    def run(spec):
        if spec is None:
            return trace(ours, x).logits
        with intervene(ours, spec):
            return trace(ours, x).logits

    expected = [run(s) for s in specs]
    assert len({tuple(e.flatten().tolist()) for e in expected}) == len(specs) - 1  # all differ but the two plain
    rounds, errors, results = 12, [], {}
    barrier = threading.Barrier(len(specs))

    def worker(i):
        try:
            barrier.wait()
            results[i] = [run(specs[i]) for _ in range(rounds)]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(specs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, outs in results.items():
        for out in outs:
            assert torch.equal(out, expected[i]), specs[i]
    # every hook was removed: the model is as it was
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in ours.modules())


def test_blocks_nest_and_hooks_are_removed_after_an_error(vit_pair):
    _, ours, size, _ = vit_pair
    x = pixels(size, batch=1)
    with intervene(ours, Intervention(positions="remove")):
        with intervene(ours, Intervention(skip_layers=[0])):
            nested = our_answer(ours, x)
    with intervene(ours, Intervention(positions="remove", skip_layers=[0])):
        both = our_answer(ours, x)
    assert torch.equal(nested, both)
    with pytest.raises(RuntimeError):
        with intervene(ours, Intervention(skip_layers=[0])):
            raise RuntimeError("boom")
    assert all(not m._forward_pre_hooks for m in ours.modules())


# ------------------------------------------------------------------------------------------ the spec
@pytest.mark.parametrize("changes, words", [
    (dict(ablate_heads={2: [0]}), "layer 2 does not exist; this model has layers 0 to 1"),
    (dict(ablate_heads={1: [0, 4]}), "head 4 does not exist; this model has heads 0 to 3"),
    (dict(skip_layers=[-1]), "layer -1 does not exist"),
    (dict(skip_attention=[5]), "skip_attention: layer 5"),
    (dict(skip_mlp=[2]), "skip_mlp: layer 2"),
    (dict(patch_order=[0, 1, 2]), "permutation of the 16 patch indices 0 to 15"),
    (dict(patch_order=[0] * 16), "with repeats"),
    (dict(patch_order=list(range(1, 17))), "out of range [16]"),
])
def test_invalid_specs_say_what_is_valid(changes, words):
    model = our_model()
    with pytest.raises(ValueError) as info:
        with intervene(model, Intervention(**changes)):
            pass
    assert words in str(info.value)
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_malformed_specs_are_refused_at_once_and_equal_specs_are_equal():
    with pytest.raises(ValueError, match="positions must be one of"):
        Intervention(positions="shuffle")
    with pytest.raises(ValueError, match="whole numbers"):
        Intervention(skip_layers=["2"])
    with pytest.raises(ValueError, match="map a layer"):
        Intervention(ablate_heads=[0, 1])
    with pytest.raises(ValueError, match="either an Intervention or keywords"):
        with intervene(our_model(), Intervention(), skip_layers=[0]):
            pass
    a = Intervention(ablate_heads={3: [5, 0, 5], 1: []}, skip_layers=(7, 7, 2))
    b = Intervention(ablate_heads={3: (0, 5)}, skip_layers=[2, 7])
    assert a == b and hash(a) == hash(b) and a.ablate_heads == {3: (0, 5)}
    assert a.describe() == "heads 0, 5 of layer 3 switched off; layers 2, 7 skipped"
    assert Intervention().describe() == "no change" and Intervention().is_identity
    assert Intervention(positions="remove", patch_order=[1, 0]).describe() == "no position embeddings; patches shuffled"


def test_keyword_form_and_shuffled_order():
    model = our_model()
    x = pixels(32, batch=1)
    with intervene(model, skip_layers=[0]) as same:
        assert same is model
        a = our_answer(model, x)
    with intervene(model, Intervention(skip_layers=[0])):
        b = our_answer(model, x)
    assert torch.equal(a, b)
    order = shuffled_order(16, seed=0)
    assert sorted(order) == list(range(16)) and order != tuple(range(16)) and order == shuffled_order(16, seed=0)
    image = rearrange(np.arange(16), "(a b) -> a b 1", a=4)
    assert rearrange_patches(image, order, 1).ravel().tolist() == list(order)
