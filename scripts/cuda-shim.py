#!/usr/bin/env python3
"""Generates headstart's CUDA loader shim: one small shared library that the CUDA build links
against instead of the NVIDIA libraries, so that the binary starts on any machine.

    scripts/cuda-shim.py CUDARC_SRC LIBCUDART OUT_DIR

The shim, OUT_DIR/libheadstart_cuda_shim.so, is an ELF *auxiliary filter* (`ld --auxiliary`) of
libcuda.so.1, libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10 and
libnvrtc.so.13: when the dynamic loader finds those libraries (the driver's, a CUDA 13 toolkit's,
or the wheels PyTorch ships), every symbol resolves to the real library; when it does not, the
shim's own definitions are used, which return the library's "not initialised / stub library"
error (and print nothing). headstart checks which libraries were really loaded before it touches
the GPU (`headstart devices`), so these definitions are a safety net, never a code path.

Beside the shim, OUT_DIR holds linker scripts named libcuda.so, libcudart.so, libcublas.so,
libcublasLt.so, libcurand.so and libnvrtc.so, each `INPUT(-lheadstart_cuda_shim)`: cudarc's and
candle-kernels' `-lcuda -lcublas …` resolve to the shim, so the binary's only CUDA dependency is
the shim (found through RUNPATH $ORIGIN, i.e. beside the binary).

The symbol list is taken from the sources the binary is built from: cudarc's generated `sys`
bindings (driver, cuBLAS, cuBLASLt, cuRAND, NVRTC) and the export table of the toolchain's
libcudart.so.13 (candle-kernels' statically linked kernels call the runtime). A symbol the binary
needs and the shim lacks fails the link, loudly; it never fails at run time.
"""

import os
import re
import subprocess
import sys

# library: (soname, sys module in cudarc, error code its stubs return)
LIBRARIES = {
    "cuda": ("libcuda.so.1", "driver", 34),  # CUDA_ERROR_STUB_LIBRARY
    "cublas": ("libcublas.so.13", "cublas", 1),  # CUBLAS_STATUS_NOT_INITIALIZED
    "cublasLt": ("libcublasLt.so.13", "cublaslt", 1),
    "curand": ("libcurand.so.10", "curand", 203),  # CURAND_STATUS_INITIALIZATION_FAILED
    "nvrtc": ("libnvrtc.so.13", "nvrtc", 11),  # NVRTC_ERROR_INTERNAL_ERROR
    "cudart": ("libcudart.so.13", "runtime", 34),  # cudaErrorStubLibrary
}

FN = re.compile(r"^pub unsafe fn ([A-Za-z_][A-Za-z0-9_]*)\((.*?)\)(?:\s*->\s*([^{]+))?\s*\{", re.S)

# Functions whose stub must do more than return an error code.
SPECIAL = {
    # cuGetErrorString / cuGetErrorName(CUresult, const char **out)
    "cuGetErrorString": "long cuGetErrorString(long e, const char **s) { if (s) *s = MISSING; return 0; }",
    "cuGetErrorName": "long cuGetErrorName(long e, const char **s) { if (s) *s = MISSING; return 0; }",
    # Called by nvcc-generated static constructors at start-up: must succeed quietly.
    "__cudaRegisterFatBinary": "void **__cudaRegisterFatBinary(void *f) { return fat_handle; }",
    "__cudaRegisterFatBinaryEnd": "void __cudaRegisterFatBinaryEnd(void **h) { }",
    "__cudaUnregisterFatBinary": "void __cudaUnregisterFatBinary(void **h) { }",
    "__cudaRegisterFunction": "void __cudaRegisterFunction(void) { }",
    "__cudaRegisterVar": "void __cudaRegisterVar(void) { }",
    "__cudaRegisterManagedVar": "void __cudaRegisterManagedVar(void) { }",
    "__cudaRegisterHostVar": "void __cudaRegisterHostVar(void) { }",
    "__cudaRegisterUnifiedTable": "void __cudaRegisterUnifiedTable(void) { }",
    "__cudaInitModule": "char __cudaInitModule(void **h) { return 0; }",
    # candle creates a cuRAND generator with every CUDA device; headstart never draws random
    # numbers on the GPU. Without cuRAND these succeed on a dummy generator (so the library is
    # optional), and every curandGenerate* fails with CURAND_STATUS_INITIALIZATION_FAILED.
    "curandCreateGenerator": "long curandCreateGenerator(void **g, long kind) { if (g) *g = fat_dummy; return 0; }",
    "curandSetPseudoRandomGeneratorSeed": "long curandSetPseudoRandomGeneratorSeed(void *g, unsigned long long s) { return 0; }",
    "curandSetGeneratorOffset": "long curandSetGeneratorOffset(void *g, unsigned long long o) { return 0; }",
    "curandSetStream": "long curandSetStream(void *g, void *s) { return 0; }",
    "curandDestroyGenerator": "long curandDestroyGenerator(void *g) { return 0; }",
}


def rust_functions(path):
    """(name, returns_pointer, returns_void) for every `pub unsafe fn` in a cudarc sys module."""
    text = open(path, encoding="utf-8").read()
    out = {}
    for m in re.finditer(r"^pub unsafe fn [^{]*\{", text, re.M):
        f = FN.match(m.group(0))
        if not f:
            continue
        ret = (f.group(3) or "").strip()
        out[f.group(1)] = (ret.startswith("*"), ret == "")
    return out


def cudart_exports(libcudart):
    """Every function libcudart.so.13 exports (names without their version suffix)."""
    nm = subprocess.run(["nm", "-D", "--defined-only", libcudart], check=True, capture_output=True, text=True)
    names = set()
    for line in nm.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in ("T", "W"):
            names.add(parts[2].split("@")[0])
    return names


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    cudarc, libcudart, out = sys.argv[1:]
    os.makedirs(out, exist_ok=True)
    lines = [
        "/* Generated by scripts/cuda-shim.py: headstart's CUDA loader shim. Do not edit. */",
        "#include <stddef.h>",
        'static const char MISSING[] = "this CUDA library is not installed (headstart loader shim)";',
        "static void *fat_dummy[4];",
        "static void **fat_handle = fat_dummy;",
    ]
    seen = set()
    for lib, (_soname, module, code) in LIBRARIES.items():
        if module == "runtime":
            funcs = {n: (n.endswith(("GetErrorString", "GetErrorName")), False) for n in cudart_exports(libcudart)}
            funcs.update(rust_functions(os.path.join(cudarc, "src", module, "sys", "mod.rs")))
        else:
            funcs = rust_functions(os.path.join(cudarc, "src", module, "sys", "mod.rs"))
        lines.append(f"/* {lib}: {len(funcs)} functions */")
        for name in sorted(funcs):
            if name in seen:
                continue
            seen.add(name)
            ptr, void = funcs[name]
            if name in SPECIAL:
                lines.append(SPECIAL[name])
            elif ptr:
                lines.append(f"const char *{name}(void) {{ return MISSING; }}")
            elif void:
                lines.append(f"void {name}(void) {{ }}")
            else:
                lines.append(f"long {name}(void) {{ return {code}; }}")
    src = os.path.join(out, "headstart_cuda_shim.c")
    with open(src, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    aux = []
    for _lib, (soname, _m, _c) in LIBRARIES.items():
        aux.append(f"-Wl,--auxiliary={soname}")
    cc = os.environ.get("CC", "cc")
    so = os.path.join(out, "libheadstart_cuda_shim.so")
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O1", "-w", "-o", so, "-Wl,-soname,libheadstart_cuda_shim.so", *aux, src],
        check=True,
    )
    for lib in LIBRARIES:
        with open(os.path.join(out, f"lib{lib}.so"), "w", encoding="utf-8") as f:
            f.write("/* headstart: link this library through the loader shim (scripts/cuda-shim.py) */\n")
            f.write("INPUT(-lheadstart_cuda_shim)\n")
    print(f"cuda-shim: {len(seen)} functions → {so}")


if __name__ == "__main__":
    main()
