"""The CUDA C of the CuPy photometric backend (photometric/cuda.py) compiles for Hopper, on a CPU.

No GPU has run these kernels yet (tests/test_photometric_cuda.py checks their parity on one), so
this catches what an edit can break without one: nvcc compiles the RawModule source and, wrapped
the way CuPy wraps them (each parameter a typed local), the bodies of the elementwise and reduction
kernels, for sm_90 (H100/H200) down to machine code (ptxas). Needs nvcc (skipped without it);
CuPy is not needed: the module is imported with a stand-in that only records the kernels it
defines.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import streamanon.photometric as photometric

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA toolkit) is not installed")

# CuPy's type names in kernel parameters -> the C types its generated code declares.
C_TYPES = {"float32": "float", "float64": "double", "uint8": "unsigned char", "int32": "int", "int64": "long long"}


class _Recorded:
    """What the module handed to one CuPy kernel constructor."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


@pytest.fixture(scope="module")
def kernels() -> dict[str, list[_Recorded]]:
    """The kernels photometric/cuda.py defines at import, by constructor name."""
    recorded: dict[str, list[_Recorded]] = {"RawModule": [], "ElementwiseKernel": [], "ReductionKernel": []}

    def recorder(kind: str):
        def make(*args, **kwargs):
            recorded[kind].append(_Recorded(*args, **kwargs))
            return recorded[kind][-1]

        return make

    stand_in = types.ModuleType("cupy")
    for kind in recorded:
        setattr(stand_in, kind, recorder(kind))
    saved = {name: sys.modules.pop(name) for name in ("cupy", "streamanon.photometric.cuda") if name in sys.modules}
    saved_attribute = photometric.__dict__.get("cuda")
    sys.modules["cupy"] = stand_in
    try:
        importlib.import_module("streamanon.photometric.cuda")
    finally:
        # The real modules (or none) again, so no other test sees the stand-in (on a GPU machine
        # the real backend may be loaded already: the package's attribute is put back too).
        for name in ("cupy", "streamanon.photometric.cuda"):
            sys.modules.pop(name, None)
        sys.modules.update(saved)
        if saved_attribute is None:
            photometric.__dict__.pop("cuda", None)
        else:
            photometric.cuda = saved_attribute
    return recorded


def _params(spec: str, const: bool) -> list[str]:
    """CuPy's ``"float32 a, float32 b"`` as C declarations of locals bound to element ``i``."""
    lines = []
    for k, param in enumerate(p.strip() for p in spec.split(",")):
        type_name, name = param.split()
        c_type = C_TYPES[type_name]
        lines.append(f"const {c_type} {name} = in{k}[i];" if const else f"{c_type}& {name} = out{k}[i];")
    return lines


def _pointer_args(spec: str, prefix: str, const: bool) -> list[str]:
    types_ = [C_TYPES[p.split()[0]] for p in spec.split(",")]
    return [f"{'const ' if const else ''}{t}* {prefix}{k}" for k, t in enumerate(types_)]


def _elementwise_source(kernel: _Recorded) -> str:
    in_params, out_params, operation, name = kernel.args[:4]
    args = _pointer_args(in_params, "in", True) + _pointer_args(out_params, "out", False)
    body = "\n        ".join(_params(in_params, True) + _params(out_params, False) + [operation])
    return f"""
extern "C" __global__ void {name}({", ".join(args)}, long long n)
{{
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {{
        {body}
    }}
}}
"""


def _reduction_source(kernel: _Recorded) -> str:
    in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name = kernel.args[:7]
    (out_type,) = {C_TYPES[p.split()[0]] for p in out_params.split(",")}
    args = _pointer_args(in_params, "in", True) + _pointer_args(out_params, "out", False)
    # One thread's share of CuPy's reduction: map each element, fold with reduce_expr, then post-map.
    return f"""
extern "C" __global__ void {name}({", ".join(args)}, long long n)
{{
    {out_type} a = ({out_type})({identity});
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {{
        {" ".join(_params(in_params, True))}
        const {out_type} b = ({out_type})({map_expr});
        a = ({reduce_expr});
    }}
    const long long i = 0;
    {" ".join(_params(out_params, False))}
    {post_map_expr};
}}
"""


def _compile(source: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "kernels.cu"
    path.write_text(source)
    return subprocess.run([NVCC, "-arch=sm_90", "-cubin", "-o", str(tmp_path / "kernels.cubin"), str(path)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_the_raw_kernels_compile_and_every_launched_name_is_defined(kernels, tmp_path):
    (module,) = kernels["RawModule"]
    source = module.kwargs["code"]
    result = _compile(source, tmp_path)
    assert result.returncode == 0, result.stderr
    defined = set(re.findall(r'extern "C" __global__ void (\w+)\(', source))
    launched = set(re.findall(r'_launch\("(\w+)"', (Path(photometric.__file__).parent / "cuda.py").read_text()))
    assert launched and launched <= defined, f"launched but not defined: {launched - defined}"


def test_the_elementwise_and_reduction_kernels_compile(kernels, tmp_path):
    assert len(kernels["ElementwiseKernel"]) >= 5 and len(kernels["ReductionKernel"]) >= 2
    source = "".join(map(_elementwise_source, kernels["ElementwiseKernel"]))
    source += "".join(map(_reduction_source, kernels["ReductionKernel"]))
    result = _compile(source, tmp_path)
    assert result.returncode == 0, result.stderr


def test_a_broken_kernel_fails_to_compile(tmp_path):
    """The check above can fail: nvcc rejects what CuPy would reject."""
    bad = _Recorded("float32 x", "float32 y", "y = undefined_function(x);", "streamanon_broken")
    assert _compile(_elementwise_source(bad), tmp_path).returncode != 0
