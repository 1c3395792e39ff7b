#!/usr/bin/env python3
"""The static instruction mix of a .cu file's kernels, without a GPU.

Compiles the file for one architecture (default sm_90) twice with the toolkit's nvcc: to PTX,
whose instructions it counts per kernel (tensor-core mma's, ldmatrix, exponentials, conversions,
compares and selects, the rest), and to a cubin with `-Xptxas -v`, for each kernel's registers
and spill bytes. The CUDA 13 toolkit here has no cuobjdump or nvdisasm, so the counts are PTX
instructions, not SASS; ptxas maps these kernels' arithmetic about one to one.

--loop counts one tile's compute: the body of the loop with the most mma's, from its first
ldmatrix to its last mma (the next tile's loads, staged before, are left out). Static counts:
where a tile's element-wise code has two variants (tiles that need the causal mask and tiles
that do not), both are counted. "per mma" (instructions that are not mma's, per mma) says how
much of the issue bandwidth the element-wise work takes from the tensor cores. Timing needs a
GPU (bench/cuda_ops_bench.cpp). The headers are the source's own tree's, so a baseline
checkout (git worktree) can be measured beside the working one.

  bench/kernel_instruction_mix.py [--arch sm_90] [--loop] [--filter SUBSTRING] [FILE.cu ...]
  (default file: src/vacc/kernels/cuda/attention_flash_mma.cu)
"""
import argparse
import collections
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "src/vacc/kernels/cuda/attention_flash_mma.cu"
CATEGORIES = [  # (column, PTX opcodes: the instruction's name before its first '.')
    ("mma", {"mma"}),
    ("ldmatrix", {"ldmatrix"}),
    ("ld/st/cp", {"ld", "ldu", "st", "cp"}),
    ("ex2", {"ex2"}),
    ("cvt", {"cvt"}),
    ("setp/selp", {"setp", "selp"}),
]


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                         check=True).stdout.splitlines()
    short = []
    for name in out:
        name = re.sub(r"vacc::cuda::\(anonymous namespace\)::", "", name)
        name = re.sub(r"\(.*\)$", "", name)  # drop the parameter list
        name = name.replace("vacc::bf16", "bf16")
        short.append(re.sub(r"^void ", "", name))
    return short


def ptx_kernels(ptx):
    """{mangled kernel: [opcode or label]} from PTX text; labels are kept as 'LABEL:' and
    branches as 'bra TARGET'."""
    kernels, current, depth = {}, None, 0
    for line in ptx.splitlines():
        line = line.strip()
        m = re.match(r"(?:\.visible\s+)?\.entry\s+(\S+?)\(", line)
        if m:
            current, depth = m.group(1), 0
            kernels[current] = []
            continue
        if current is None:
            continue
        depth += line.count("{") - line.count("}")
        if line.startswith("}") and depth <= 0 and kernels[current]:
            current = None
            continue
        if re.match(r"^\$\w+:$", line):
            kernels[current].append(line)
            continue
        if not line or line.startswith(("//", ".", "{", "}")):
            continue
        words = re.sub(r"^@!?%\w+\s+", "", line).rstrip(";").split()
        op = words[0].split(".")[0]
        kernels[current].append(f"bra {words[-1]}" if op == "bra" else op)
    return kernels


def tile_loop(ops):
    """The instructions of the loop with the most mma's: the region from a label to a branch
    back to it (nested loops inside it are counted once)."""
    where, best = {}, []
    for i, op in enumerate(ops):
        if op.endswith(":"):
            where[op[:-1]] = i
        elif op.startswith("bra ") and op[4:] in where:
            body = ops[where[op[4:]]:i + 1]
            key = (sum(o == "mma" for o in body), len(body))
            if key > (sum(o == "mma" for o in best), len(best)):
                best = body
    return best


def compute_span(ops):
    """The tile's compute: from the tile loop's first ldmatrix to its last mma (the loads of the
    next tile, staged before it, and their fallback paths are left out)."""
    body = tile_loop(ops)
    marks = [i for i, o in enumerate(body) if o in ("ldmatrix", "mma")]
    return body[marks[0]:max(i for i in marks if body[i] == "mma") + 1] if marks else []


def mix(ops):
    return collections.Counter(o.split()[0] for o in ops if not o.endswith(":"))


def ptxas_usage(log):
    """{mangled kernel: (registers, spill store bytes, spill load bytes)} from `ptxas -v`."""
    usage, current = {}, None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\S+)'", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and current:
            usage.setdefault(current, [0, 0, 0])[1:] = [int(m.group(1)), int(m.group(2))]
        m = re.search(r"Used (\d+) registers", line)
        if m and current:
            usage.setdefault(current, [0, 0, 0])[0] = int(m.group(1))
    return usage


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", default=[str(DEFAULT)])
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--filter", default="", help="only kernels whose name contains this")
    ap.add_argument("--loop", action="store_true",
                    help="count only the compute of each kernel's tile loop (the loop with the "
                         "most mma's), from its first ldmatrix to its last mma")
    args = ap.parse_args()
    for source in args.files:
        # The headers of the source's own tree (another checkout's, for a baseline).
        tree = next((p for p in pathlib.Path(source).resolve().parents if p.name == "src"),
                    ROOT / "src")
        flags = ["nvcc", "-std=c++20", "-O3", f"-arch={args.arch}", f"-I{tree}"]
        with tempfile.TemporaryDirectory() as tmp:
            ptx_path, cubin_path = pathlib.Path(tmp) / "k.ptx", pathlib.Path(tmp) / "k.cubin"
            subprocess.run(flags + ["-ptx", "-o", str(ptx_path), source], check=True)
            log = subprocess.run(flags + ["-cubin", "-Xptxas", "-v", "-o", str(cubin_path),
                                          source], check=True, capture_output=True, text=True)
            kernels = ptx_kernels(ptx_path.read_text())
        usage = ptxas_usage(log.stderr)
        mangled = sorted(kernels)
        names = dict(zip(mangled, demangle(mangled)))
        what = "a tile's compute" if args.loop else "the whole kernel"
        print(f"# {source} ({args.arch}; static PTX instructions of {what})")
        header = ["kernel", "total"] + [c for c, _ in CATEGORIES] + ["other", "per mma", "regs",
                                                                    "spill st/ld"]
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|")
        for k in mangled:
            if args.filter not in names[k]:
                continue
            c = mix(compute_span(kernels[k]) if args.loop else kernels[k])
            total = sum(c.values())
            cols = [sum(c[op] for op in ops) for _, ops in CATEGORIES]
            used = sum(cols)
            mma = cols[0]
            regs, spill_st, spill_ld = usage.get(k, (0, 0, 0))
            per_mma = f"{(total - mma) / mma:.1f}" if mma else "-"
            print("| " + " | ".join([f"`{names[k]}`", str(total)] + [str(n) for n in cols] +
                                    [str(total - used), per_mma, str(regs),
                                     f"{spill_st}/{spill_ld}"]) + " |")


if __name__ == "__main__":
    sys.exit(main())
