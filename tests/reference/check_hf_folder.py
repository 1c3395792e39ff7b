#!/usr/bin/python3
"""Checks that model folders written by vacc are what Hugging Face transformers'
Qwen2ForCausalLM / LlamaForCausalLM `from_pretrained` expects (transformers itself is not
installed here, so its expectations are written out below).

Usage:
  check_hf_folder.py --vacc VACC --config CONFIG.json   # make folders with `vacc init`, check them
  check_hf_folder.py FOLDER [FOLDER ...]                # check existing folders

What is checked, as transformers reads a folder:
  config.json       architectures[0] and model_type of a supported family, the integer and
                    float fields the config class reads, hidden_act silu, torch_dtype,
                    head_dim consistent with hidden_size / num_attention_heads (Qwen2Attention
                    in transformers 4.4x computes it so), no rope_scaling; when made from a
                    config, every field equal to that config's
  weights           model.safetensors alone, or model.safetensors.index.json ({"metadata":
                    {"total_size"}, "weight_map"}) + model-0000K-of-0000M.safetensors; every
                    file parsed by the hand-written reader below (u64 header length, JSON
                    header padded to 8 bytes, {"format": "pt"} metadata, which transformers
                    refuses to load without, contiguous data offsets); the index's map and
                    total_size agree with the files
  names/shapes      exactly the state_dict of the PyTorch module tree (built here with
                    torch.nn, as modeling_qwen2.py / modeling_llama.py lay it out), loaded
                    with load_state_dict: nothing unexpected, nothing missing except a tied
                    lm_head.weight; every tensor in the dtype torch_dtype names
  values            the loaded model runs (make_model_reference.forward) with finite logits
                    and, freshly initialised, a loss near ln(vocab); weights ~ normal(0,
                    initializer_range), norms 1, biases 0; the bf16 folder is the f32 one
                    rounded, the sharded one equal to the single file
"""
import argparse
import json
import math
import os
import re
import struct
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_reference as reference  # noqa: E402

DTYPES = {"F32": (torch.float32, 4), "BF16": (torch.bfloat16, 2), "F16": (torch.float16, 2)}
TORCH_DTYPE_NAMES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
FAMILIES = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral"}

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)
    return cond


# ---------------------------------------------------------------------------------------
# safetensors, read by hand

def read_safetensors(path):
    """name -> (dtype name, shape, torch tensor), and the metadata; checks the layout."""
    with open(path, "rb") as f:
        blob = f.read()
    check(len(blob) >= 8, f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    check(8 + n <= len(blob), f"{path}: header length {n} beyond the file")
    check(n % 8 == 0, f"{path}: header not padded to a multiple of 8 bytes ({n})")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", None)
    data = blob[8 + n:]
    tensors, spans = {}, []
    for name, e in header.items():
        check(set(e) == {"dtype", "shape", "data_offsets"}, f"{path}: {name}: keys {sorted(e)}")
        check(e["dtype"] in DTYPES, f"{path}: {name}: dtype {e['dtype']}")
        begin, end = e["data_offsets"]
        torch_dtype, size = DTYPES[e["dtype"]]
        numel = math.prod(e["shape"])
        check(end - begin == numel * size, f"{path}: {name}: {end - begin} bytes for {e['shape']}")
        spans.append((begin, end, name))
        raw = bytearray(data[begin:end])
        t = torch.frombuffer(raw, dtype=torch.int16 if size == 2 else torch.int32) if numel else \
            torch.empty(0, dtype=torch.int32)
        t = t.view(torch_dtype).reshape(e["shape"])
        tensors[name] = (e["dtype"], list(e["shape"]), t)
    spans.sort()
    position = 0
    for begin, end, name in spans:
        check(begin == position, f"{path}: {name} begins at {begin}, expected {position} (hole/overlap)")
        position = end
    check(position == len(data), f"{path}: tensors cover {position} of {len(data)} data bytes")
    return tensors, metadata


# ---------------------------------------------------------------------------------------
# The PyTorch module tree of Qwen2ForCausalLM / LlamaForCausalLM (parameters only)

class RMSNorm(torch.nn.Module):
    def __init__(self, h):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(h))


class Attention(torch.nn.Module):
    def __init__(self, cfg, bias):
        super().__init__()
        h, d = cfg["hidden_size"], reference.head_dim(cfg)
        nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.q_proj = torch.nn.Linear(h, nh * d, bias=bias)
        self.k_proj = torch.nn.Linear(h, nkv * d, bias=bias)
        self.v_proj = torch.nn.Linear(h, nkv * d, bias=bias)
        self.o_proj = torch.nn.Linear(nh * d, h, bias=False)


class MLP(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, i = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = torch.nn.Linear(h, i, bias=False)
        self.up_proj = torch.nn.Linear(h, i, bias=False)
        self.down_proj = torch.nn.Linear(i, h, bias=False)


class DecoderLayer(torch.nn.Module):
    def __init__(self, cfg, bias):
        super().__init__()
        self.self_attn = Attention(cfg, bias)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg["hidden_size"])
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"])


class Model(torch.nn.Module):
    def __init__(self, cfg, bias):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = torch.nn.ModuleList(DecoderLayer(cfg, bias) for _ in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"])


class ForCausalLM(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        bias = cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)
        self.model = Model(cfg, bias)
        self.lm_head = torch.nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        if cfg.get("tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight


# ---------------------------------------------------------------------------------------

def check_config(folder, expected):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    arch = cfg.get("architectures", [None])[0]
    check(arch in FAMILIES, f"{folder}: architectures {cfg.get('architectures')}")
    check(cfg.get("model_type") == FAMILIES.get(arch), f"{folder}: model_type {cfg.get('model_type')} for {arch}")
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
        check(isinstance(cfg.get(key), int) and not isinstance(cfg.get(key), bool) and cfg[key] > 0,
              f"{folder}: config {key} = {cfg.get(key)!r} is not a positive integer")
    for key in ("rope_theta", "rms_norm_eps", "initializer_range"):
        check(isinstance(cfg.get(key), (int, float)) and cfg[key] > 0, f"{folder}: config {key} = {cfg.get(key)!r}")
    check(isinstance(cfg.get("tie_word_embeddings"), bool), f"{folder}: tie_word_embeddings {cfg.get('tie_word_embeddings')!r}")
    check(cfg.get("hidden_act") == "silu", f"{folder}: hidden_act {cfg.get('hidden_act')!r}")
    check(cfg.get("torch_dtype") in ("float32", "bfloat16"), f"{folder}: torch_dtype {cfg.get('torch_dtype')!r}")
    check(isinstance(cfg.get("transformers_version"), str), f"{folder}: no transformers_version")
    check(cfg.get("rope_scaling") is None, f"{folder}: rope_scaling {cfg.get('rope_scaling')}")
    check(cfg["num_attention_heads"] % cfg["num_key_value_heads"] == 0, f"{folder}: heads not a multiple of kv heads")
    check(cfg["hidden_size"] % cfg["num_attention_heads"] == 0 and
          cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"]) ==
          cfg["hidden_size"] // cfg["num_attention_heads"],
          f"{folder}: head_dim {cfg.get('head_dim')} is not hidden_size / num_attention_heads")
    if cfg.get("model_type") == "qwen2":
        check(cfg.get("use_sliding_window", False) is False, f"{folder}: use_sliding_window")
    if expected is not None:
        for key, value in expected.items():
            if key in ("torch_dtype",):
                continue
            got = cfg.get(key)
            same = math.isclose(got, value) if isinstance(value, float) and isinstance(got, (int, float)) else got == value
            check(same, f"{folder}: config {key} = {got!r}, the source config has {value!r}")
    gen_path = os.path.join(folder, "generation_config.json")
    if check(os.path.exists(gen_path), f"{folder}: no generation_config.json"):
        gen = json.load(open(gen_path))
        for key in ("bos_token_id", "eos_token_id"):
            if key in cfg:
                check(gen.get(key) == cfg[key], f"{folder}: generation_config {key} {gen.get(key)} vs {cfg[key]}")
    return cfg


def read_weights(folder):
    """name -> tensor, reading the single file or the index and its shards."""
    single = os.path.join(folder, "model.safetensors")
    index_path = os.path.join(folder, "model.safetensors.index.json")
    files = {}
    if os.path.exists(single):
        check(not os.path.exists(index_path), f"{folder}: both model.safetensors and an index")
        files["model.safetensors"] = read_safetensors(single)
        weight_map = {name: "model.safetensors" for name in files["model.safetensors"][0]}
    else:
        if not check(os.path.exists(index_path), f"{folder}: no model.safetensors and no index"):
            return {}, {}
        index = json.load(open(index_path))
        check(set(index) >= {"metadata", "weight_map"}, f"{index_path}: keys {sorted(index)}")
        weight_map = index["weight_map"]
        names = sorted(set(weight_map.values()))
        m = len(names)
        check(names == [f"model-{k:05d}-of-{m:05d}.safetensors" for k in range(1, m + 1)],
              f"{index_path}: shard names {names}")
        for name in names:
            files[name] = read_safetensors(os.path.join(folder, name))
        total = sum(t.numel() * t.element_size() for f in files.values() for (_, _, t) in f[0].values())
        check(index["metadata"].get("total_size") == total,
              f"{index_path}: total_size {index['metadata'].get('total_size')} but the tensors hold {total}")
    tensors, dtypes = {}, {}
    for file_name, (content, metadata) in files.items():
        check(metadata == {"format": "pt"}, f"{folder}/{file_name}: metadata {metadata} (transformers needs format pt)")
        for name, (dtype, shape, t) in content.items():
            check(name not in tensors, f"{folder}: {name} in two files")
            check(weight_map.get(name) == file_name, f"{folder}: {name} is in {file_name}, the index says {weight_map.get(name)}")
            tensors[name], dtypes[name] = t, dtype
    check(set(weight_map) == set(tensors), f"{folder}: index and files disagree on "
          f"{sorted(set(weight_map) ^ set(tensors))[:5]}")
    return tensors, dtypes


def check_folder(folder, expected_config=None, fresh=False):
    print(f"checking {folder}")
    cfg = check_config(folder, expected_config)
    tensors, dtypes = read_weights(folder)
    want_dtype = TORCH_DTYPE_NAMES.get(cfg.get("torch_dtype"))
    for name, dtype in dtypes.items():
        check(dtype == want_dtype, f"{folder}: {name} is {dtype}, torch_dtype says {want_dtype}")

    module = ForCausalLM(cfg)
    state = {k: v.float() for k, v in tensors.items()}
    result = module.load_state_dict(state, strict=False)
    allowed_missing = ["lm_head.weight"] if cfg["tie_word_embeddings"] else []
    check(list(result.missing_keys) == allowed_missing, f"{folder}: missing tensors {result.missing_keys}")
    check(not result.unexpected_keys, f"{folder}: unexpected tensors {result.unexpected_keys}")
    check("lm_head.weight" not in tensors or not cfg["tie_word_embeddings"],
          f"{folder}: lm_head.weight written although tied")
    if failures:
        return tensors

    # Run it: the reference forward pass on the loaded parameters.
    params = {k: v.double() for k, v in state.items()}
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg["vocab_size"], (2, 16), generator=gen)
    logits = reference.forward(cfg, params, ids)
    check(torch.isfinite(logits).all().item(), f"{folder}: non-finite logits")
    if fresh:
        labels = torch.randint(0, cfg["vocab_size"], (2, 16), generator=gen)  # not the inputs:
        # with tied embeddings a token's own logit is raised
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg["vocab_size"]), labels.reshape(-1))
        check(abs(loss.item() - math.log(cfg["vocab_size"])) < 0.1,
              f"{folder}: initial loss {loss.item():.3f}, expected about ln(V) = {math.log(cfg['vocab_size']):.3f}")
        std = cfg["initializer_range"]
        for name, t in state.items():
            if name.endswith("norm.weight"):
                check(bool((t == 1).all()), f"{folder}: {name} is not all ones")
            elif name.endswith(".bias"):
                check(bool((t == 0).all()), f"{folder}: {name} is not all zeros")
            elif t.numel() >= 2000:
                check(abs(t.mean().item()) < 0.1 * std and abs(t.std().item() / std - 1) < 0.05,
                      f"{folder}: {name} mean {t.mean().item():.2e} std {t.std().item():.4f}, want 0, {std}")
    return tensors


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    check(r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}: {r.stderr}")
    return r


def generated(vacc, config_path):
    expected = json.load(open(config_path))
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 300,
             "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
             "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
             "attention_bias": False, "hidden_act": "silu", "initializer_range": 0.02,
             "bos_token_id": 1, "eos_token_id": 2}
    with tempfile.TemporaryDirectory() as tmp:
        llama_path = os.path.join(tmp, "llama.json")
        json.dump(llama, open(llama_path, "w"))
        tok = os.path.join(tmp, "tok")
        os.makedirs(tok)
        json.dump({"model": {"type": "BPE", "vocab": {chr(97 + i): i for i in range(26)}},
                   "added_tokens": [{"id": 26, "content": "<|endoftext|>", "special": True}]},
                  open(os.path.join(tok, "tokenizer.json"), "w"))
        json.dump({"eos_token": "<|endoftext|>"}, open(os.path.join(tok, "tokenizer_config.json"), "w"))

        env_home = ["env", "VACC_HOME=" + os.path.join(tmp, "home")]
        f32, bf16, shards = (os.path.join(tmp, n) for n in ("f32", "bf16", "shards"))
        run(env_home + [vacc, "init", "--config", config_path, "--seed", "5", "--tokenizer", tok, f32])
        run(env_home + [vacc, "init", "--config", config_path, "--seed", "5", "--dtype", "bf16", bf16])
        run(env_home + [vacc, "init", "--config", config_path, "--seed", "5", "--max-shard-size", "1MB", shards])
        llama_dir = os.path.join(tmp, "llama")
        run(env_home + [vacc, "init", "--config", llama_path, "--max-shard-size", "100KB", llama_dir])
        if failures:
            return

        a = check_folder(f32, expected, fresh=True)
        b = check_folder(bf16, expected, fresh=True)
        c = check_folder(shards, expected, fresh=True)
        check_folder(llama_dir, llama, fresh=True)
        if failures:
            return
        check(len([n for n in os.listdir(shards) if re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", n)]) >= 3,
              f"{shards}: expected at least 3 shards for 1MB")
        check(len([n for n in os.listdir(llama_dir) if n.endswith(".safetensors")]) >= 2,
              f"{llama_dir}: expected shards")
        check("lm_head.weight" in read_weights(llama_dir)[0], "the untied llama folder has lm_head.weight")
        for name, t in a.items():
            check(torch.equal(t, c[name]), f"{name}: the sharded folder differs from the single file")
            check(torch.equal(t.to(torch.bfloat16), b[name]), f"{name}: the bf16 folder is not the f32 one rounded")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            check(open(os.path.join(tok, name)).read() == open(os.path.join(f32, name)).read(),
                  f"{f32}: {name} not copied from the tokenizer folder")
        check(not os.path.exists(os.path.join(bf16, "tokenizer.json")), f"{bf16}: a tokenizer appeared from nowhere")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--vacc")
    parser.add_argument("--config")
    parser.add_argument("folders", nargs="*")
    args = parser.parse_args()
    if args.vacc:
        generated(args.vacc, args.config)
    for folder in args.folders:
        check_folder(folder)
    if failures:
        sys.exit(f"{len(failures)} check(s) failed")
    print("all checks passed")


if __name__ == "__main__":
    main()
