#!/usr/bin/env python3
"""Rewrites a CUDA source of src/vacc/kernels/cuda into C++ for the CPU simulator (cuda_sim.h):
kernel launches K<<<cfg>>>(args); become vacc_sim::launch(cfg, [=] { K(args); }); (the
arguments copied, as a launch copies them, so that a launch recorded into a graph replays),
`extern __shared__` arrays a per-block buffer, and the launch checks the simulator's. A .cuh of the
same folder that launches kernels is inlined where it is included, and rewritten with it.
usage: cu_to_sim.py IN.cu OUT.cpp"""
import os
import re
import sys


def inline_launching_headers(src: str, path: str) -> str:
    """Replaces each #include of a .cuh of src/vacc/kernels/cuda that launches kernels with the
    header's text, so that its launches are rewritten too (with #line markers for messages)."""
    folder = os.path.dirname(os.path.abspath(path))
    out = []
    for number, line in enumerate(src.splitlines(keepends=True), start=1):
        m = re.match(r'#include "vacc/kernels/cuda/(\w+\.cuh)"', line)
        text = open(os.path.join(folder, m.group(1))).read() if m else ""
        if "<<<" in text:
            text = re.sub(r"^#pragma once\n", "", text, flags=re.M)
            header = os.path.join(folder, m.group(1))
            out.append(f'#line 1 "{header}"\n{text}#line {number + 1} "{path}"\n')
        else:
            out.append(line)
    return "".join(out)


def rewrite(src: str) -> str:
    out = []
    i = 0
    launch = re.compile(r"([A-Za-z_][A-Za-z_0-9]*)<<<")
    while True:
        m = launch.search(src, i)
        if not m:
            out.append(src[i:])
            break
        out.append(src[i:m.start()])
        cfg_end = src.index(">>>", m.end())
        cfg = src[m.end():cfg_end]
        j = cfg_end + 3
        while src[j].isspace():
            j += 1
        if src[j] != "(":
            raise SystemExit(f"cu_to_sim: no argument list after the launch of {m.group(1)}")
        depth, k = 0, j
        while True:
            if src[k] == "(":
                depth += 1
            elif src[k] == ")":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        args = src[j + 1:k]
        out.append(f"::vacc_sim::launch({cfg}, [=] {{ {m.group(1)}({args}); }})")
        i = k + 1
    text = "".join(out)
    text = re.sub(r"extern\s+__shared__\s+(\w+)\s+(\w+)\[\];",
                  r"\1* \2 = ::vacc_sim::dynamic_shared<\1>();", text)
    text = text.replace("cudaFuncSetAttribute(", "::vacc_sim::func_set_attribute(")
    text = text.replace("VACC_CUDA_CHECK_LAUNCH(", "VACC_SIM_CHECK_LAUNCH(")
    text = re.sub(r"(?<![\w:])check_launch\(", "::vacc_sim::check_launch(", text)
    return '#include "cuda_sim.h"\n#line 1 "' + sys.argv[1] + '"\n' + text


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        src = inline_launching_headers(f.read(), sys.argv[1])
    with open(sys.argv[2], "w") as f:
        f.write(rewrite(src))
