"""ModelSpec against hand-computed numbers and against transformers' own parameter count."""

import json

import pytest
import torch
import transformers

from hexserve.errors import SpecError
from hexserve.specs.model import load_model, model_from_config


def test_llama_2_70b_hand_computed():
    m = load_model("llama-2-70b")
    assert m.params == 68_976_648_192
    assert m.kv_bytes_per_token == 327_680
    assert m.weights_bytes == 2 * 68_976_648_192
    # attention 2*8192^2 + 2*8192*1024, MLP 3*8192*28672, two RMSNorms
    assert m.layer_params == 855_654_400


def test_opt_30b_and_smollm2_hand_computed():
    assert load_model("opt-30b").kv_bytes_per_token == 1_376_256
    smol = load_model("smollm2-135m")
    assert smol.kv_bytes_per_token == 23_040
    assert smol.params == 134_515_008
    assert smol.dtype == "bfloat16" and smol.tie_embeddings


SMALL = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=8, vocab_size=300)

CONFIGS = {
    "llama-gqa": (transformers.LlamaConfig, dict(SMALL, num_key_value_heads=2)),
    "llama-biases-tied": (
        transformers.LlamaConfig,
        dict(SMALL, num_key_value_heads=4, attention_bias=True, mlp_bias=True, tie_word_embeddings=True),
    ),
    "llama3-rope-scaling": (
        transformers.LlamaConfig,
        dict(SMALL, num_key_value_heads=2, head_dim=16, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64, "rope_theta": 500000.0}),
    ),
    "mistral": (transformers.MistralConfig, dict(SMALL, num_key_value_heads=2, sliding_window=32)),
    "qwen2": (transformers.Qwen2Config, dict(SMALL, num_key_value_heads=2, tie_word_embeddings=True)),
    "opt": (transformers.OPTConfig, dict(hidden_size=64, ffn_dim=160, num_hidden_layers=3, num_attention_heads=8,
                                         vocab_size=300, max_position_embeddings=128)),
    "opt-350m-style": (transformers.OPTConfig, dict(hidden_size=64, ffn_dim=160, num_hidden_layers=2,
                                                    num_attention_heads=4, vocab_size=300, word_embed_proj_dim=32,
                                                    do_layer_norm_before=False, max_position_embeddings=64)),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_params_equal_transformers(name, tmp_path):
    config_cls, kwargs = CONFIGS[name]
    config = config_cls(**kwargs)
    config.save_pretrained(tmp_path)  # the config.json a user's checkpoint carries
    spec = load_model(str(tmp_path))
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert spec.params == sum(p.numel() for p in model.parameters())
    layer = model.model.layers[0] if hasattr(model, "model") and hasattr(model.model, "layers") else (
        model.model.decoder.layers[0])
    assert spec.layer_params == sum(p.numel() for p in layer.parameters())


def test_kv_bytes_follow_gqa():
    mha = model_from_config({"architectures": ["LlamaForCausalLM"], **SMALL, "num_key_value_heads": 8})
    gqa = model_from_config({"architectures": ["LlamaForCausalLM"], **SMALL, "num_key_value_heads": 2})
    assert mha.kv_bytes_per_token == 4 * gqa.kv_bytes_per_token
    assert gqa.kv_bytes_per_token == 2 * 3 * 2 * 8 * 2  # K and V, layers, KV heads, head dim, fp16


def test_valid_tp_degrees_divide_heads_and_kv_heads():
    m = load_model("llama-2-70b")
    assert m.valid_tp_degrees(8) == [1, 2, 4, 8]
    assert 3 not in m.valid_tp_degrees(16) and 6 not in m.valid_tp_degrees(16)
    assert m.kv_heads_per_rank(16) == 1  # KV heads replicated once TP passes their count
    assert load_model("smollm2-135m").valid_tp_degrees(9) == [1, 3, 9]


def test_unsupported_architecture_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "n_layer": 2}))
    with pytest.raises(SpecError, match="GPT2LMHeadModel is not supported; supported: LlamaForCausalLM"):
        load_model(str(tmp_path))


def test_malformed_json_names_the_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"architectures": ["LlamaForCausalLM"],\n "hidden_size": }')
    with pytest.raises(SpecError, match="malformed JSON at line 2"):
        load_model(str(path))


def test_missing_field_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 8}))
    with pytest.raises(SpecError, match="lacks 'num_hidden_layers'"):
        load_model(str(tmp_path))


def test_unknown_model_name_lists_shipped_names():
    with pytest.raises(SpecError, match="llama-2-70b"):
        load_model("no-such-model")
