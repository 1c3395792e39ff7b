"""Reads the F32 tensors of a Hugging Face folder's .safetensors files (stdlib only)."""
import json
import os
import struct


def read_safetensors(folder):
    """{name: tuple of floats} of every .safetensors file in the folder (F32 only)."""
    out = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(folder, name), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            data = f.read()
        for key, t in header.items():
            if key == "__metadata__":
                continue
            assert t["dtype"] == "F32", t
            b, e = t["data_offsets"]
            out[key] = struct.unpack(f"<{(e - b) // 4}f", data[b:e])
    return out


def max_abs_difference(a, b):
    """The largest |a - b| over every tensor of two read_safetensors results (None when the
    tensor names or sizes differ), and the largest |b|."""
    if sorted(a) != sorted(b) or any(len(a[k]) != len(b[k]) for k in a):
        return None, None
    worst = max(max(abs(x - y) for x, y in zip(a[k], b[k])) for k in a)
    scale = max(max(abs(y) for y in b[k]) for k in b)
    return worst, scale
