#!/usr/bin/python3
"""Reference values for the whole-model test (model_reference_test.cpp), from plain PyTorch.

Usage: /usr/bin/python3 make_model_reference.py OUTDIR

For each configuration below (two Qwen2 ones and a Llama one) this writes OUTDIR/<name>/:
  config.json          a Hugging Face config.json
  weights.safetensors  the model's weights, F32, under Hugging Face tensor names, [out, in];
                       lm_head.weight only when the embeddings are not tied
  reference.safetensors
    input_ids  I32 (batch, seq)   random token ids
    labels     I32 (batch, seq)   labels[b, t] is the target of logits[b, t] (already shifted,
                                  as vacc's TokenBatch holds them; Hugging Face's ForCausalLM
                                  would take unshifted labels and shift them itself); -100 is
                                  ignored
    logits     F32 (batch*seq, vocab)
    loss       F32 (1)            mean cross-entropy over the labels != -100
    grad.<name> F32               d loss / d parameter for every checkpoint tensor (for tied
                                  embeddings: both uses summed, under model.embed_tokens.weight)
    losses     F32 (10)           the loss before each of 10 AdamW steps (losses[0] == loss)
    grad_norms F32 (10)           the global gradient norm before clipping at each step
  with __metadata__ describing the optimizer settings.

The model is written out op by op as Hugging Face transformers computes Qwen2/Llama
(modeling_qwen2.py / modeling_llama.py), not imported from it:
  RMSNorm: x * rsqrt(mean(x^2) + eps) * w
  RoPE, rotate-half: inv_freq = 1 / theta^(arange(0, D, 2).float() / D) in float32, angles
    position * inv_freq in float32 (as HF does), cos/sin of those angles
  GQA: k/v heads repeated (q head h uses kv head h // (Hq / Hkv)); causal softmax, scale
    1/sqrt(D); q/k/v biases when the config has them (Qwen2 always), o_proj without
  MLP: down(silu(gate(x)) * up(x)); final norm; lm_head (tied to embed_tokens when
    tie_word_embeddings)
Every computation after the float32 weights are drawn is done in float64, so the values
are the exact result up to float64 rounding (the C++ float32 model is compared with them).

Optimizer: torch.optim.AdamW(lr 1e-3, betas (0.9, 0.999), eps 1e-8), weight_decay 0.1 on
2-D weights only (embeddings, lm_head, projections); norms and biases in a group without
decay; torch.nn.utils.clip_grad_norm_(max_norm=1.0) before each step; the same batch every
step; in float64.
"""
import json
import math
import os
import struct
import sys

import torch

STEPS = 10
LR = 1e-3
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
WEIGHT_DECAY = 0.1
MAX_GRAD_NORM = 1.0

CONFIGS = {
    # Qwen2: q/k/v biases, GQA 6 query heads on 2 kv heads, tied embeddings, theta 1e6.
    "qwen2": {
        "seed": 1234,
        "batch": 2,
        "seq": 37,
        "config": {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "vocab_size": 503,
            "hidden_size": 96,
            "intermediate_size": 200,
            "num_hidden_layers": 3,
            "num_attention_heads": 6,
            "num_key_value_heads": 2,
            "max_position_embeddings": 64,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "torch_dtype": "float32",
        },
    },
    # Qwen2 with head_dim 64: the size the GPU's tensor-core flash kernels take (the other two
    # cases take its cuBLASLt route); 75 tokens end in partial tiles (queries of 64, the
    # backward's keys of 32); GQA 2 query heads on 1 kv head.
    "qwen2_hd64": {
        "seed": 2024,
        "batch": 2,
        "seq": 75,
        "config": {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "vocab_size": 257,
            "hidden_size": 128,
            "intermediate_size": 160,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 128,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "torch_dtype": "float32",
        },
    },
    # Llama: no biases, separate lm_head, no GQA (ratio 1), head_dim 24 (hidden / heads,
    # not given in the config), theta 1e4, eps 1e-5.
    "llama": {
        "seed": 4321,
        "batch": 2,
        "seq": 37,
        "config": {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": 331,
            "hidden_size": 96,
            "intermediate_size": 176,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 64,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "attention_bias": False,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "torch_dtype": "float32",
        },
    },
}


def head_dim(cfg):
    return cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])


def has_bias(cfg):
    return cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)


def make_weights(cfg, gen):
    """float32 weights under Hugging Face names, shapes [out, in].

    Matrices are normal(0, 0.02) as Hugging Face initialises them, except q_proj and k_proj
    (std 0.08) so that attention is clearly not uniform and its softmax is exercised. Norm
    weights (uniform in [0.5, 1.5]) and biases (normal, std 0.3) are random rather than 1 and
    0, so their gradients are tested too.
    """
    C, F, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    Hq, Hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim(cfg)

    def normal(shape, std):
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std

    def norm_weight():
        return 0.5 + torch.rand((C,), generator=gen, dtype=torch.float32)

    w = {"model.embed_tokens.weight": normal((V, C), 0.02)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = norm_weight()
        w[p + "self_attn.q_proj.weight"] = normal((Hq * D, C), 0.08)
        w[p + "self_attn.k_proj.weight"] = normal((Hkv * D, C), 0.08)
        w[p + "self_attn.v_proj.weight"] = normal((Hkv * D, C), 0.02)
        if has_bias(cfg):
            w[p + "self_attn.q_proj.bias"] = normal((Hq * D,), 0.3)
            w[p + "self_attn.k_proj.bias"] = normal((Hkv * D,), 0.3)
            w[p + "self_attn.v_proj.bias"] = normal((Hkv * D,), 0.3)
        w[p + "self_attn.o_proj.weight"] = normal((C, Hq * D), 0.02)
        w[p + "post_attention_layernorm.weight"] = norm_weight()
        w[p + "mlp.gate_proj.weight"] = normal((F, C), 0.02)
        w[p + "mlp.up_proj.weight"] = normal((F, C), 0.02)
        w[p + "mlp.down_proj.weight"] = normal((C, F), 0.02)
    w["model.norm.weight"] = norm_weight()
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = normal((V, C), 0.02)
    return w


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_tables(cfg, seq):
    """cos, sin (seq, D) in float64 of the float32 angles Hugging Face computes."""
    D = head_dim(cfg)
    base = cfg["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))  # float32
    positions = torch.arange(seq, dtype=torch.int64).float()
    angles = torch.outer(positions, inv_freq)  # float32, as HF's (inv_freq @ position_ids)
    emb = torch.cat((angles, angles), dim=-1).double()
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def forward(cfg, p, ids):
    """Logits (B, T, V) in float64 of parameters p (float64) for token ids (B, T)."""
    B, T = ids.shape
    Hq, Hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim(cfg)
    eps = cfg["rms_norm_eps"]
    cos, sin = rope_tables(cfg, T)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    x = p["model.embed_tokens.weight"][ids.long()]
    for l in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{l}."
        h = rms_norm(x, p[pre + "input_layernorm.weight"], eps)

        def proj(name, heads):
            y = h @ p[pre + f"self_attn.{name}_proj.weight"].T
            if has_bias(cfg):
                y = y + p[pre + f"self_attn.{name}_proj.bias"]
            return y.view(B, T, heads, D).transpose(1, 2)  # (B, heads, T, D)

        q, k, v = proj("q", Hq), proj("k", Hkv), proj("v", Hkv)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(Hq // Hkv, dim=1)
        v = v.repeat_interleave(Hq // Hkv, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        scores = scores.masked_fill(~causal, float("-inf"))
        attn = torch.softmax(scores, dim=-1) @ v  # (B, Hq, T, D)
        attn = attn.transpose(1, 2).reshape(B, T, Hq * D)
        x = x + attn @ p[pre + "self_attn.o_proj.weight"].T

        h = rms_norm(x, p[pre + "post_attention_layernorm.weight"], eps)
        gate = h @ p[pre + "mlp.gate_proj.weight"].T
        up = h @ p[pre + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ p[pre + "mlp.down_proj.weight"].T
    x = rms_norm(x, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else p["lm_head.weight"]
    return x @ head.T


def loss_of(cfg, p, ids, labels):
    logits = forward(cfg, p, ids)
    V = cfg["vocab_size"]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, V), labels.reshape(-1).long(), ignore_index=-100, reduction="mean")
    return loss, logits


def make_batch(cfg, batch, seq, gen):
    V = cfg["vocab_size"]
    ids = torch.randint(0, V, (batch, seq), generator=gen, dtype=torch.int64)
    labels = torch.randint(0, V, (batch, seq), generator=gen, dtype=torch.int64)
    # Some positions ignored: a masked "prompt" at the start of sequence 1, padding at the end
    # of sequence 0, and a few scattered ones.
    labels[1, :7] = -100
    labels[0, seq - 5:] = -100
    scattered = torch.rand((batch, seq), generator=gen) < 0.1
    labels[scattered] = -100
    return ids.to(torch.int32), labels.to(torch.int32)


def write_safetensors(path, tensors, metadata=None):
    """Writes a dict name -> tensor (float32, bfloat16 or int32) as a safetensors file."""
    names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.int32: "I32"}
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        if t.dtype == torch.bfloat16:
            data = t.view(torch.int16).numpy().tobytes()
        else:
            data = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def make_reference(name, spec, outdir):
    cfg = spec["config"]
    gen = torch.Generator().manual_seed(spec["seed"])
    weights = make_weights(cfg, gen)
    ids, labels = make_batch(cfg, spec["batch"], spec["seq"], gen)

    folder = os.path.join(outdir, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_safetensors(os.path.join(folder, "weights.safetensors"), weights, {"format": "pt"})

    params = {n: w.double().requires_grad_(True) for n, w in weights.items()}
    loss, logits = loss_of(cfg, params, ids, labels)
    loss.backward()
    out = {
        "input_ids": ids,
        "labels": labels,
        "logits": logits.detach().reshape(-1, cfg["vocab_size"]).float(),
        "loss": loss.detach().reshape(1).float(),
    }
    for n, prm in params.items():
        out["grad." + n] = prm.grad.float()

    # Ten AdamW steps from the same weights (fresh float64 copies), the same batch each step.
    params = {n: w.double().requires_grad_(True) for n, w in weights.items()}
    decay = [prm for prm in params.values() if prm.dim() == 2]
    no_decay = [prm for prm in params.values() if prm.dim() != 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=LR, betas=BETAS, eps=ADAM_EPS)
    losses, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        step_loss, _ = loss_of(cfg, params, ids, labels)
        losses.append(step_loss.item())
        step_loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm=MAX_GRAD_NORM)
        norms.append(float(norm))
        opt.step()
    out["losses"] = torch.tensor(losses, dtype=torch.float64).float()
    out["grad_norms"] = torch.tensor(norms, dtype=torch.float64).float()

    metadata = {
        "config": name,
        "labels": "aligned with logits (already shifted); -100 ignored",
        "optimizer": f"AdamW lr={LR} betas={BETAS} eps={ADAM_EPS} weight_decay={WEIGHT_DECAY} "
                     "on 2-D weights only",
        "clip_grad_norm": str(MAX_GRAD_NORM),
        "steps": str(STEPS),
        "torch": torch.__version__,
    }
    write_safetensors(os.path.join(folder, "reference.safetensors"), out, metadata)
    counted = int((labels != -100).sum())
    print(f"{name}: {sum(w.numel() for w in weights.values())} parameters, "
          f"{counted} counted labels, loss {losses[0]:.6f} -> {losses[-1]:.6f}, "
          f"grad norms {norms[0]:.4f} .. {norms[-1]:.4f}")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_model_reference.py OUTDIR")
    torch.set_num_threads(1)
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    for name, spec in CONFIGS.items():
        make_reference(name, spec, outdir)


if __name__ == "__main__":
    main()
