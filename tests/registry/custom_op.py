"""A real OpenVINO extension library built in the tests (``scale_op.cpp``: op ``OvbatchScale``,
y = x * alpha + bias), an IR that uses it, and a GPU custom-layer config for it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

SOURCE = Path(__file__).with_name("scale_op.cpp")
OP = "OvbatchScale"
ALPHA = 2.5


def build_extension(out: Path, bias: float = 0.0) -> Path:
    """``scale_op.cpp`` compiled against the installed openvino wheel's headers (a few seconds)."""
    import openvino as ov

    compiler = shutil.which("g++")
    if compiler is None:
        pytest.fail("g++ is not installed: the custom-operation tests build an extension (apt-get install g++)")
    package = Path(ov.__file__).parent
    runtime = sorted((package / "libs").glob("libopenvino.so.*"))
    if not (package / "include" / "openvino").is_dir() or not runtime:
        pytest.fail(f"the openvino wheel at {package} ships no C++ headers or libopenvino.so")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        compiler, "-std=c++17", "-O2", "-shared", "-fPIC", f"-DSCALE_BIAS={bias}f",
        f"-I{package / 'include'}", str(SOURCE), "-o", str(out), f"-L{package / 'libs'}", f"-l:{runtime[0].name}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"building the test extension failed:\n{done.stderr}"
    return out


def write_ir(folder: Path, hidden: int = 256, seed: int = 0) -> Path:
    """``openvino_model.xml/.bin``: x -> OvbatchScale(alpha) -> MatMul(random weights) -> y."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((hidden, hidden)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    weights.tofile(folder / "openvino_model.bin")
    dims = f"<dim>1</dim><dim>{hidden}</dim>"
    square = f"<dim>{hidden}</dim><dim>{hidden}</dim>"
    (folder / "openvino_model.xml").write_text(f"""<?xml version="1.0"?>
<net name="scaled" version="11">
  <layers>
    <layer id="0" name="x" type="Parameter" version="opset1">
      <data shape="1,{hidden}" element_type="f32"/>
      <output><port id="0" precision="FP32" names="x">{dims}</port></output>
    </layer>
    <layer id="1" name="scale" type="{OP}" version="extension">
      <data alpha="{ALPHA}"/>
      <input><port id="0" precision="FP32">{dims}</port></input>
      <output><port id="1" precision="FP32">{dims}</port></output>
    </layer>
    <layer id="2" name="w" type="Const" version="opset1">
      <data element_type="f32" shape="{hidden},{hidden}" offset="0" size="{weights.nbytes}"/>
      <output><port id="0" precision="FP32">{square}</port></output>
    </layer>
    <layer id="3" name="mm" type="MatMul" version="opset1">
      <data transpose_a="false" transpose_b="false"/>
      <input><port id="0" precision="FP32">{dims}</port><port id="1" precision="FP32">{square}</port></input>
      <output><port id="2" precision="FP32" names="y">{dims}</port></output>
    </layer>
    <layer id="4" name="y" type="Result" version="opset1">
      <input><port id="0" precision="FP32">{dims}</port></input>
    </layer>
  </layers>
  <edges>
    <edge from-layer="0" from-port="0" to-layer="1" to-port="0"/>
    <edge from-layer="1" from-port="1" to-layer="3" to-port="0"/>
    <edge from-layer="2" from-port="0" to-layer="3" to-port="1"/>
    <edge from-layer="3" from-port="2" to-layer="4" to-port="0"/>
  </edges>
</net>
""")
    return folder


def expected(folder: Path, x: np.ndarray, bias: float = 0.0) -> np.ndarray:
    hidden = x.shape[-1]
    weights = np.fromfile(folder / "openvino_model.bin", np.float32).reshape(hidden, hidden)
    return (x * ALPHA + bias) @ weights


def write_gpu_config(folder: Path) -> Path:
    """A GPU custom-layer config for OvbatchScale and the OpenCL source it names (in a subfolder)."""
    (folder / "kernels").mkdir(parents=True, exist_ok=True)
    (folder / "kernels" / "scale.cl").write_text(
        "__kernel void ovbatch_scale(const __global INPUT0_TYPE* in, __global OUTPUT0_TYPE* out)\n"
        "{ const uint i = get_global_id(0); out[i] = in[i] * alpha; }\n"
    )
    config = folder / "scale_kernels.xml"
    config.write_text(f"""<CustomLayer name="{OP}" type="SimpleGPU" version="1">
  <Kernel entry="ovbatch_scale">
    <Source filename="kernels/scale.cl"/>
    <Define name="alpha" type="float" param="alpha" default="1.0"/>
  </Kernel>
  <Buffers>
    <Tensor arg-index="0" type="input" port-index="0" format="BFYX"/>
    <Tensor arg-index="1" type="output" port-index="0" format="BFYX"/>
  </Buffers>
  <WorkSizes global="B*F*Y*X,1,1"/>
</CustomLayer>
""")
    return config
