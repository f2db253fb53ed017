import json

import pytest

from gpumix.planner.catalog import load_catalog, norm_name
from gpumix.planner.errors import InputError
from gpumix.planner.workload import load_workload

GOOD = {
    "models": [{"name": "llama-3.1-8b", "rate_rps": 2.0, "slo": {"ttft_ms": 1000, "tpot_ms": 60},
                "buckets": [{"input_tokens": 256, "output_tokens": 128, "share": 0.6},
                            {"input_tokens": 1024, "output_tokens": 256, "share": 0.4}]}],
    "gpus": [{"name": "A10G", "price_per_hour": 1.01, "available": 8}, {"name": "L4"}],
}


def write(tmp_path, doc, name="w.json"):
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def err_of(tmp_path, doc, name="w.json") -> InputError:
    with pytest.raises(InputError) as e:
        load_workload(write(tmp_path, doc, name), load_catalog())
    return e.value


def mutate(fn):
    doc = json.loads(json.dumps(GOOD))
    fn(doc)
    return doc


def test_good_workload_loads_with_catalog_defaults(tmp_path):
    w = load_workload(write(tmp_path, GOOD), load_catalog())
    assert w.models[0].shape.name == "llama-3.1-8b"
    assert [g.name for g in w.gpus] == ["A10G", "L4"]
    assert w.gpus[1].price_per_hour == load_catalog().gpu("L4").price_per_hour
    assert w.gpus[0].available == 8 and w.gpus[1].available is None
    assert w.max_utilization == 0.9


@pytest.mark.parametrize("fn, field, words", [
    (lambda d: d["models"][0].update(name="no-such-model"), "models[0].name", "unknown model"),
    (lambda d: d["models"][0].update(rate_rps=-1), "models[0].rate_rps", "> 0"),
    (lambda d: d["models"][0].update(rate_rps=0), "models[0].rate_rps", "> 0"),
    (lambda d: d["models"][0]["buckets"][0].update(share=0.5), "models[0].buckets", "sum to 1"),
    (lambda d: d["models"][0].pop("slo"), "models[0].slo", "missing"),
    (lambda d: d["models"][0]["slo"].pop("tpot_ms"), "models[0].slo.tpot_ms", "missing"),
    (lambda d: d["models"][0]["buckets"][1].update(input_tokens=1.5), "models[0].buckets[1].input_tokens", "integer"),
    (lambda d: d["gpus"][0].update(name="H900"), "gpus[0].name", "unknown GPU"),
    (lambda d: d["gpus"][0].update(available=-2), "gpus[0].available", ">= 0"),
    (lambda d: d["gpus"][0].update(price_per_hour="cheap"), "gpus[0].price_per_hour", "number"),
    (lambda d: d.update(max_utilization=1.5), "max_utilization", "(0, 1]"),
    (lambda d: d.pop("models"), "models", "missing"),
    (lambda d: d["models"].append(d["models"][0]), "models[1].name", "duplicate"),
    (lambda d: d.update(modles=[]), "modles", "unknown key"),
])
def test_bad_input_names_file_and_field(tmp_path, fn, field, words):
    e = err_of(tmp_path, mutate(fn))
    assert e.field == field
    assert words in e.message
    assert str(tmp_path / "w.json") in str(e)
    assert "\n" not in str(e)


def test_malformed_json_and_yaml_are_one_line(tmp_path):
    e = err_of(tmp_path, '{"models": [', "w.json")
    assert "malformed JSON" in str(e) and "line 1" in e.field
    e = err_of(tmp_path, "models:\n  - name: [unclosed\n", "w.yaml")
    assert "malformed YAML" in str(e) and "\n" not in str(e)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_workload(tmp_path / "nope.yaml", load_catalog())


def test_local_config_json_is_used(tmp_path):
    cfg = {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8,
           "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    doc = mutate(lambda d: d["models"][0].update(name="my-model", config="cfg.json"))
    w = load_workload(write(tmp_path, doc), load_catalog())
    assert w.models[0].shape.num_layers == 8 and w.models[0].shape.head_dim == 64
    (tmp_path / "cfg.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "vocab_size"}))
    e = err_of(tmp_path, doc)
    assert e.field == "vocab_size" and "cfg.json" in e.file


def test_catalog_covers_required_gpus_and_models():
    cat = load_catalog()
    for g in ["B200", "H200", "H100", "H100-PCIe", "A100-80GB", "A100-40GB", "L40S", "A10G", "L4", "T4", "MI300X"]:
        spec = cat.gpu(g)
        assert spec is not None and spec.price_per_hour > 0 and spec.memory_gb > 0, g
    expected = {"llama-3.1-8b": 8.03, "llama-3.1-70b": 70.55, "llama-3.1-405b": 405.85, "mistral-7b": 7.25,
                "mixtral-8x7b": 46.7, "qwen2.5-7b": 7.62, "qwen2.5-14b": 14.77, "qwen2.5-32b": 32.8,
                "qwen2.5-72b": 72.7, "gemma-2-9b": 9.24, "gemma-2-27b": 27.2, "phi-3-mini": 3.82}
    for name, billions in expected.items():
        shape = cat.model(name)
        assert shape is not None, name
        # parameter counts computed from the config shapes match the published ones
        assert shape.params / 1e9 == pytest.approx(billions, rel=0.02), name
    assert cat.model("meta-llama/Llama-3.1-8B") is cat.model("llama-3.1-8b")
    assert norm_name("H100 SXM") == norm_name("h100-sxm")
    mix = cat.model("mixtral-8x7b")
    assert mix.active_params / 1e9 == pytest.approx(12.9, rel=0.03)
