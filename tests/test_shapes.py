import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.data import DATA_DIR
from gpumix.planner.catalog import load_catalog
from gpumix.planner.errors import InputError
from gpumix.planner.shapes import ConfigError, ModelShape, QuantSpec, load_config_file, shape_from_config

CAT = load_catalog()
KIB = 1024

DENSE = {"model_type": "llama", "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8,
         "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000}


def shape(cfg, name="m"):
    return shape_from_config(cfg, name)


def refusal(tmp_path, cfg) -> InputError:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(InputError) as e:
        load_config_file(path, "m", "models[0].config", "w.yaml")
    assert e.value.file == str(path) and e.value.exit_code == 2
    return e.value


# -- published counts -----------------------------------------------------------------------------

# Active counts as published: DeepSeek and Mixtral count one vocabulary table, Qwen counts the
# embedding and the lm_head (active_params counts the lm_head only: +V*H), GLM counts neither (-V*H).
ACTIVE = {"mixtral-8x7b": (12.9, 0), "deepseek-v3": (37.0, 0), "qwen3-30b-a3b": (3.3, 1),
          "qwen3-235b-a22b": (22.0, 1), "glm-4.5-air": (12.0, -1)}


def test_every_catalog_model_matches_its_published_parameter_count():
    index = json.loads((DATA_DIR / "models" / "index.json").read_text())
    for m in index["models"]:
        s = CAT.models[m["name"]]
        assert s.params / 1e9 == pytest.approx(m["params_b"], rel=0.02), m["name"]
        cfg = json.loads((DATA_DIR / "models" / m["config"]).read_text())
        assert cfg["_params_b"] == m["params_b"], m["name"]
        assert s.active_params <= s.params
    for name, (billions, vocab_tables) in ACTIVE.items():
        s = CAT.model(name)
        published = s.active_params + vocab_tables * s.vocab_size * s.hidden_size
        assert published / 1e9 == pytest.approx(billions, rel=0.03), name


def test_deepseek_v3_is_mla_moe_with_dense_leading_layers():
    s = CAT.model("deepseek-v3")
    assert s.is_moe and s.is_mla and (s.moe_layers, s.dense_layers) == (58, 3)
    assert s.params / 1e9 == pytest.approx(671, rel=0.02)
    assert s.active_params / 1e9 == pytest.approx(37, rel=0.03)
    assert s.routed_expert_params == 3 * 7168 * 2048 == s.expert_params
    assert s.shared_expert_params == s.routed_expert_params  # n_shared_experts = 1
    assert s.kv_bytes_per_token(1) == 61 * (512 + 64) * 2
    assert s.kv_bytes_per_token(8) == s.kv_bytes_per_token(1)  # the latent cache is on every rank
    assert s.checkpoint_quant == QuantSpec("fp8", 8, None, "fp8")
    assert s.tp_problem(8) == "" and s.tp_problem(3) != ""


def test_qwen3_moe_and_glm_layouts():
    q = CAT.model("qwen3-30b-a3b")
    assert (q.moe_layers, q.dense_layers, q.num_experts, q.experts_per_token) == (48, 0, 128, 8)
    assert q.qk_norm and not q.qkv_bias
    g = CAT.model("glm-4.5-air")
    assert (g.moe_layers, g.dense_layers) == (45, 1) and g.qkv_bias
    assert g.shared_expert_intermediate_size == 1408


# Shape keys of DeepSeek-V2-Lite (q_lora_rank null) and Qwen1.5-MoE-A2.7B (Qwen2-MoE shared expert) as
# public configs give them; published: 15.7B total / 2.4B active, 14.3B total / 2.7B active.
V2_LITE = {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "hidden_size": 2048,
           "intermediate_size": 10944, "num_hidden_layers": 27, "num_attention_heads": 16,
           "num_key_value_heads": 16, "vocab_size": 102400, "kv_lora_rank": 512, "q_lora_rank": None,
           "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 64,
           "n_shared_experts": 2, "num_experts_per_tok": 6, "moe_intermediate_size": 1408,
           "first_k_dense_replace": 1, "moe_layer_freq": 1, "tie_word_embeddings": False}
QWEN2_MOE = {"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "hidden_size": 2048,
             "intermediate_size": 5632, "num_hidden_layers": 24, "num_attention_heads": 16,
             "num_key_value_heads": 16, "vocab_size": 151936, "num_experts": 60, "num_experts_per_tok": 4,
             "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632}


def test_mla_without_query_compression_and_qwen2_moe_shared_expert():
    lite = shape(V2_LITE)
    assert lite.is_mla and lite.q_lora_rank == 0 and (lite.moe_layers, lite.dense_layers) == (26, 1)
    assert lite.shared_expert_intermediate_size == 2 * 1408
    assert lite.params / 1e9 == pytest.approx(15.7, rel=0.02)
    assert lite.active_params / 1e9 == pytest.approx(2.4, rel=0.03)
    assert lite.kv_bytes_per_token(1) == 27 * (512 + 64) * 2
    q = shape(QWEN2_MOE)
    assert q.qkv_bias and not q.tie_word_embeddings and q.num_shared_experts == 1
    assert q.params / 1e9 == pytest.approx(14.3, rel=0.02)
    assert (q.active_params + q.vocab_size * q.hidden_size) / 1e9 == pytest.approx(2.7, rel=0.03)
    sparse = shape({**QWEN2_MOE, "decoder_sparse_step": 2, "mlp_only_layers": [1, 2]})
    assert sparse.moe_layers == 11  # layers 3, 5, ..., 23
    assert sparse.params < q.params


def test_kv_cache_per_token():
    llama = CAT.model("llama-3.1-8b")
    assert llama.kv_bytes_per_token(1) == 128 * KIB
    assert llama.kv_bytes_per_token(2) == 64 * KIB
    assert llama.kv_bytes_per_token(16) == llama.kv_bytes_per_token(8)  # 8 KV heads replicate
    assert llama.kv_bytes_per_sequence(1, 1000) == 1000 * 128 * KIB  # full attention: no bound


def test_sliding_window_bounds_the_kv_cache():
    gemma = CAT.model("gemma-2-9b")  # alternating: 21 of 42 layers slide over 4096 tokens
    assert (gemma.sliding_window, gemma.sliding_layers) == (4096, 21)
    per_layer = gemma.kv_bytes_per_token(1) / 42
    assert gemma.kv_bytes_per_sequence(1, 8192) == (21 * 8192 + 21 * 4096) * per_layer
    assert gemma.kv_bytes_per_sequence(1, 1000) == 1000 * gemma.kv_bytes_per_token(1)
    mistral = shape({**DENSE, "model_type": "mistral", "sliding_window": 4096})
    assert mistral.sliding_layers == 8
    assert mistral.kv_bytes_per_sequence(1, 32768) == mistral.kv_bytes_per_sequence(1, 4096)
    assert mistral.attention_flops(1, 32768) == mistral.attention_flops(1, 4096)
    assert mistral.kv_bytes_per_token(1) == shape(DENSE).kv_bytes_per_token(1)  # the upper bound


def test_window_rules_of_each_family():
    assert shape({**DENSE, "sliding_window": None}).sliding_window is None
    qwen = {**DENSE, "model_type": "qwen2", "sliding_window": 4096, "max_window_layers": 6}
    assert shape({**qwen, "use_sliding_window": False}).sliding_window is None
    assert shape(qwen).sliding_window is None  # Qwen's use_sliding_window defaults to false
    assert shape({**qwen, "use_sliding_window": True}).sliding_layers == 2  # layers 6 and 7
    gemma3 = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
              "text_config": {**DENSE, "model_type": "gemma3_text", "num_hidden_layers": 12,
                              "sliding_window": 1024}, "vision_config": {"model_type": "siglip_vision_model"}}
    s = shape(gemma3)
    assert (s.sliding_window, s.sliding_layers, s.num_layers) == (1024, 10, 12)  # every 6th is full
    assert s.tie_word_embeddings and s.qk_norm
    typed = {**DENSE, "sliding_window": 512, "layer_types": ["sliding_attention", "full_attention"] * 4}
    assert shape(typed).sliding_layers == 4
    assert shape({**typed, "layer_types": ["full_attention"] * 8}).sliding_window is None


def test_attention_flops_match_the_roofline_formulas():
    s = CAT.model("llama-3.1-8b")
    n, c = 2048, 3000
    assert s.attention_flops(n, n / 2) == 2 * s.num_layers * n * n * s.num_heads * s.head_dim
    assert s.attention_flops(1, c) == 4 * s.num_layers * c * s.num_heads * s.head_dim
    d = CAT.model("deepseek-v3")
    assert d.attention_flops(1, c) == 2 * 61 * c * 128 * (192 + 128)


def test_tied_embeddings_counted_once():
    untied, tied = shape({**DENSE, "tie_word_embeddings": False}), shape({**DENSE, "tie_word_embeddings": True})
    assert untied.params - tied.params == 32000 * 1024
    assert untied.active_params == tied.active_params
    assert shape({**DENSE, "model_type": "gemma2"}).tie_word_embeddings  # the family default
    assert not shape({**DENSE, "model_type": "qwen3"}).tie_word_embeddings


def test_weights_per_gpu():
    for name in ("llama-3.1-70b", "deepseek-v3", "qwen3-30b-a3b"):
        s = CAT.model(name)
        assert s.weight_bytes_per_gpu(1) == pytest.approx(2 * s.params)
        assert s.weight_bytes_per_gpu(8) < s.weight_bytes_per_gpu(4) < s.weight_bytes_per_gpu(1)
        fp8 = s.weight_bytes_per_gpu(1, linear_bytes_per_param=1.0)
        assert fp8 == pytest.approx(s.params * 2 - s.linear_params)


def test_old_keyword_construction_still_works():
    s = ModelShape(name="x", hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=16, vocab_size=100, tie_word_embeddings=False, num_experts=4, experts_per_token=2,
                   source="")
    assert s.is_moe and not s.is_mla and s.moe_layers == 2 and s.routed_expert_params == 3 * 64 * 128
    assert s.kv_bytes_per_token(1) == 2 * 2 * 2 * 16 * 2


# -- quantization_config ----------------------------------------------------------------------------

def quant(qc):
    return shape({**DENSE, "quantization_config": qc}).checkpoint_quant


def test_checkpoint_quantization_is_normalized():
    assert quant({"quant_method": "awq", "bits": 4, "group_size": 128}) == QuantSpec("awq", 4, 128, "awq")
    assert quant({"quant_method": "gptq", "bits": 4, "group_size": -1}) == QuantSpec("gptq", 4, None, "gptq")
    fp8 = {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "weights": {"num_bits": 8, "type": "float"}, "input_activations": {"num_bits": 8, "type": "float"}}}}
    assert quant(fp8).method == "fp8" and quant(fp8).raw_method == "compressed-tensors"
    int8 = {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "weights": {"num_bits": 8, "type": "int"}, "input_activations": {"num_bits": 8, "type": "int"}}}}
    assert quant(int8).method == "int8"
    w4a16 = {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "weights": {"num_bits": 4, "type": "int", "group_size": 128}}}}
    assert quant(w4a16).method is None and quant(w4a16).field == "quantization_config.config_groups"
    for qc, field in (({"quant_method": "bitsandbytes", "load_in_4bit": True}, "quant_method"),
                      ({"quant_method": "mxfp4"}, "quant_method"),
                      ({"quant_method": "gptq", "bits": 8}, "bits"), ({"quant_method": "awq", "bits": 8}, "bits")):
        q = quant(qc)
        assert q.method is None and q.field == f"quantization_config.{field}"
        assert "`quantization:`" in q.problem and q.raw_method == qc["quant_method"]
    assert shape(DENSE).checkpoint_quant is None


# -- refusals -----------------------------------------------------------------------------------------

MIXTRAL = {**DENSE, "model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2}
MLA = {**DENSE, "model_type": "deepseek_v3", "kv_lora_rank": 64, "q_lora_rank": None, "qk_nope_head_dim": 32,
       "qk_rope_head_dim": 16, "v_head_dim": 32, "n_routed_experts": 8, "num_experts_per_tok": 2,
       "moe_intermediate_size": 256, "n_shared_experts": 1, "first_k_dense_replace": 1}


@pytest.mark.parametrize("cfg, field, words", [
    ({"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 768}, "model_type", "encoder"),
    ({"model_type": "t5", "d_model": 512}, "model_type", "encoder-decoder"),
    ({"model_type": "siglip_vision_model", "hidden_size": 768}, "model_type", "vision"),
    ({**DENSE, "model_type": "foo", "architectures": ["FooForMaskedLM"]}, "architectures", "causal"),
    ({k: v for k, v in DENSE.items() if k != "vocab_size"} | {"model_type": "foo"}, "vocab_size", "'foo'"),
    ({**MIXTRAL, "num_local_experts": -8}, "num_local_experts", "positive"),
    ({**MIXTRAL, "num_experts_per_tok": 9}, "num_experts_per_tok", "only 8 experts"),
    ({**DENSE, "hidden_size": math.inf}, "hidden_size", "integer"),
    ({**DENSE, "num_hidden_layers": True}, "num_hidden_layers", "integer"),
    ({**DENSE, "num_hidden_layers": 2.5}, "num_hidden_layers", "integer"),
    ({**DENSE, "num_attention_heads": 0}, "num_attention_heads", "positive"),
    ({**DENSE, "num_key_value_heads": 32}, "num_key_value_heads", "divide"),
    ({**DENSE, "num_key_value_heads": 3}, "num_key_value_heads", "divide"),
    ({**DENSE, "sliding_window": 0}, "sliding_window", "positive"),
    ({**DENSE, "sliding_window": 16, "layer_types": ["linear_attention"] * 8}, "layer_types[0]", "not one"),
    ({**MLA, "kv_lora_rank": 0}, "kv_lora_rank", "positive"),
    ({**MLA, "first_k_dense_replace": 9}, "first_k_dense_replace", "8"),
    ({"model_type": "gemma3", "text_config": {**MIXTRAL, "num_local_experts": -1}},
     "text_config.num_local_experts", "positive"),
])
def test_refusals_name_the_field(tmp_path, cfg, field, words):
    e = refusal(tmp_path, cfg)
    assert e.field == field and words in e.message, str(e)


def test_bert_message_and_non_object(tmp_path):
    e = refusal(tmp_path, {"model_type": "bert"})
    assert str(e).endswith("model_type: 'bert' is an encoder; gpumix plans decoder LLMs only")
    assert "JSON object" in refusal(tmp_path, [1, 2]).message
    with pytest.raises(ConfigError):  # a ValueError, for callers without a file
        shape({"model_type": "roberta"})


def test_plan_with_a_refused_config_exits_2_and_writes_nothing(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps({**MIXTRAL, "num_local_experts": -2}))
    w = tmp_path / "w.json"
    w.write_text(json.dumps({"models": [{
        "name": "my-moe", "config": "cfg.json", "rate_rps": 1.0, "slo": {"ttft_ms": 1000, "tpot_ms": 100},
        "buckets": [{"input_tokens": 512, "output_tokens": 128, "share": 1.0}]}]}))
    out = tmp_path / "plan.json"
    r = CliRunner().invoke(app, ["plan", str(w), "--out", str(out)])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cfg.json" in lines[0] and "num_local_experts" in lines[0], r.output
    assert "Traceback" not in r.output and not out.exists()


# -- random configs -------------------------------------------------------------------------------------

FEW = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def configs(draw):
    kv = draw(st.sampled_from([1, 2, 4]))
    heads = kv * draw(st.sampled_from([1, 2, 4]))
    cfg = {"hidden_size": 64 * draw(st.integers(1, 16)), "num_attention_heads": heads, "num_key_value_heads": kv,
           "num_hidden_layers": draw(st.integers(1, 12)), "vocab_size": draw(st.integers(100, 5000)),
           "intermediate_size": 64 * draw(st.integers(1, 32)), "head_dim": draw(st.sampled_from([16, 32, 64])),
           "tie_word_embeddings": draw(st.booleans())}
    kind = draw(st.sampled_from(["dense", "mixtral", "qwen_moe", "deepseek", "sliding", "typed"]))
    layers = cfg["num_hidden_layers"]
    if kind == "mixtral":
        cfg |= {"model_type": "mixtral", "num_local_experts": draw(st.integers(2, 16)), "num_experts_per_tok": 2}
    elif kind == "qwen_moe":
        cfg |= {"model_type": "qwen2_moe", "num_experts": draw(st.integers(2, 64)), "num_experts_per_tok": 2,
                "moe_intermediate_size": 64 * draw(st.integers(1, 8)),
                "shared_expert_intermediate_size": 64 * draw(st.integers(0, 8)),
                "decoder_sparse_step": draw(st.integers(1, 3)),
                "mlp_only_layers": draw(st.lists(st.integers(0, layers - 1), max_size=3))}
    elif kind == "deepseek":
        cfg |= {"model_type": "deepseek_v3", "n_routed_experts": draw(st.integers(2, 64)), "num_experts_per_tok": 2,
                "moe_intermediate_size": 64 * draw(st.integers(1, 8)), "n_shared_experts": draw(st.integers(0, 2)),
                "first_k_dense_replace": draw(st.integers(0, layers)), "kv_lora_rank": 32 * draw(st.integers(1, 8)),
                "q_lora_rank": draw(st.sampled_from([None, 64, 128])), "qk_nope_head_dim": 32,
                "qk_rope_head_dim": 16, "v_head_dim": 32}
    elif kind == "sliding":
        cfg |= {"model_type": draw(st.sampled_from(["mistral", "gemma2", "gemma3_text"])),
                "sliding_window": draw(st.integers(1, 8192))}
    elif kind == "typed":
        cfg |= {"sliding_window": draw(st.integers(1, 8192)),
                "layer_types": draw(st.lists(st.sampled_from(["full_attention", "sliding_attention"]),
                                             min_size=layers, max_size=layers))}
    return cfg


GROW = ["hidden_size", "num_hidden_layers", "experts", "num_key_value_heads", "kv_lora_rank"]


def grown(cfg, what):
    cfg = dict(cfg)
    if what == "num_hidden_layers" and "layer_types" in cfg:
        cfg["layer_types"] = cfg["layer_types"] + ["full_attention"]
    if what == "experts":
        key = next((k for k in ("num_local_experts", "num_experts", "n_routed_experts") if k in cfg), None)
        if key:
            cfg[key] += 1
    elif what == "num_key_value_heads":
        if cfg["num_key_value_heads"] * 2 <= cfg["num_attention_heads"]:
            cfg["num_key_value_heads"] *= 2
    elif what in cfg:
        cfg[what] += 64 if what in ("hidden_size", "kv_lora_rank") else 1
    return cfg


@FEW
@given(configs())
def test_random_valid_configs_give_consistent_shapes(cfg):
    s = shape(cfg)
    assert 0 < s.active_params <= s.params
    assert s.linear_params < s.params
    assert s.kv_bytes_per_token(1) > 0
    assert 0 < s.kv_bytes_per_sequence(1, 4096) <= 4096 * s.kv_bytes_per_token(1)
    assert s.attention_flops(1, 4096) > 0
    weights = [s.weight_bytes_per_gpu(tp) for tp in (1, 2, 4, 8, 16)]
    assert weights == sorted(weights, reverse=True)
    assert weights[0] == pytest.approx(2 * s.params)


@FEW
@given(configs(), st.sampled_from(GROW))
def test_sizes_grow_with_the_model(cfg, what):
    small, big = shape(cfg), shape(grown(cfg, what))
    assert big.params >= small.params
    assert big.kv_bytes_per_token(1) >= small.kv_bytes_per_token(1)
    assert big.kv_bytes_per_sequence(2, 3000) >= small.kv_bytes_per_sequence(2, 3000)
