"""The torch runtime on tiny fp32 configs: KV cache, tensor parallelism over gloo, continuous batching."""
import pytest

torch = pytest.importorskip("torch")

from gpumix.planner.catalog import load_catalog  # noqa: E402
from gpumix.profiler.runtime import tp  # noqa: E402
from gpumix.profiler.runtime.engine import Engine  # noqa: E402
from gpumix.profiler.runtime.model import ModelArgs, build  # noqa: E402

TINY = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, intermediate=128, vocab=128)
TINY_MOE = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, intermediate=64,
                     vocab=128, n_experts=4, top_k=2)
ONE_KV = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=16, intermediate=128, vocab=128)


def tokens(n, seed=0, batch=1):
    return torch.randint(0, 128, (batch, n), generator=torch.Generator().manual_seed(seed))


def full_logits(model, toks):
    model.setup_cache(toks.shape[0], 64)
    pos = torch.arange(toks.shape[1])[None].expand_as(toks)
    return model(toks, pos)


@pytest.mark.parametrize("args", [TINY, TINY_MOE], ids=["dense", "moe"])
def test_cached_decode_equals_full_recompute(args):
    model = build(args, seed=1)
    toks = tokens(12, batch=2)
    ref = full_logits(model, toks)
    model.setup_cache(2, 64)
    pos = torch.arange(8)[None].expand(2, 8)
    got = [model(toks[:, :8], pos)]
    for i in range(8, 12):  # one token at a time through the cache
        got.append(model(toks[:, i:i + 1], torch.full((2, 1), i)))
    torch.testing.assert_close(torch.cat(got, 1), ref, rtol=1e-4, atol=1e-5)


def test_slots_are_independent():
    model = build(TINY, seed=2)
    a, b = tokens(6, seed=3), tokens(9, seed=4)
    ref_a, ref_b = full_logits(model, a)[:, -1], full_logits(model, b)[:, -1]
    model.setup_cache(4, 64)
    model(b, torch.arange(9)[None], torch.tensor([3]))  # b in slot 3, a in slot 1
    model(a[:, :5], torch.arange(5)[None], torch.tensor([1]))
    out = model(torch.tensor([[a[0, 5]], [b[0, 8]]]), torch.tensor([[5], [8]]), torch.tensor([1, 3]))
    torch.testing.assert_close(out[:, -1], torch.cat([ref_a, ref_b]), rtol=1e-4, atol=1e-5)


def _tp_logits(rank, world, device, report, args, toks):
    model = tp.apply_tp(build(args, device, seed=5), rank, world)
    return full_logits(model, toks)


@pytest.mark.parametrize("args", [TINY, TINY_MOE, ONE_KV], ids=["dense", "moe", "replicated-kv"])
def test_tp2_over_gloo_matches_tp1(args):
    toks = tokens(10, seed=6, batch=2)
    ref = full_logits(build(args, seed=5), toks)
    got = tp.spawn(_tp_logits, 2, "cpu", (args, toks), timeout_s=120)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_tp_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="heads"):
        tp.apply_tp(build(TINY), 0, 3)


def test_continuous_batching_gives_each_request_its_solo_tokens():
    model = build(TINY, seed=7)
    prompts = [tokens(n, seed=10 + n)[0].tolist() for n in (5, 11, 3, 8, 6)]
    lengths = [7, 3, 9, 1, 5]
    solo = []
    for p, n in zip(prompts, lengths):
        eng = Engine(model, n_slots=1, max_seq=32)
        eng.add(p, n)
        solo.append(eng.run()[0])
    eng = Engine(model, n_slots=3, max_seq=32)  # fewer slots than requests: some wait, join later
    ids = [eng.add(p, n) for p, n in zip(prompts, lengths)]
    sizes, out = [], {}
    while not eng.scheduler.idle():
        for r in eng.step():
            out[r.id] = r.output
        sizes.append(len(eng.scheduler.running))
    assert [out[i] for i in ids] == solo
    assert [len(t) for t in solo] == lengths
    assert max(sizes) == 3 and len(set(sizes)) > 2  # the batch grew and shrank between steps


def test_engine_rejects_requests_longer_than_the_cache():
    eng = Engine(build(TINY), n_slots=1, max_seq=8)
    with pytest.raises(ValueError, match="exceed"):
        eng.add(list(range(6)), 4)


def test_args_from_config_and_scaling():
    shape = load_catalog().model("llama-3.1-8b")
    args = ModelArgs.from_shape(shape)
    assert args.shape("x").params == shape.params
    small = args.scaled(layers=2, hidden=0.25, vocab=4096)
    assert (small.n_layers, small.n_heads, small.n_kv_heads, small.dim) == (2, 8, 2, 1024)
    assert small.head_dim == 128 and small.vocab == 4096 and small.intermediate % 64 == 0
    moe = ModelArgs.from_shape(load_catalog().model("mixtral-8x7b"))
    assert moe.n_experts == 8 and moe.top_k == 2
    cfg = ModelArgs.from_config({"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                                 "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 128,
                                 "rope_theta": 500000.0})
    assert cfg.rope_theta == 500000.0 and cfg.head_dim == 16
