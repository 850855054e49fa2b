import pathlib
import platform

from optimizer3.provenance import cpu_model, describe_machine, machine

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu avx2 avx512f

processor\t: 1
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
"""


def test_cpu_model_names_family_and_model(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    assert cpu_model(cpuinfo) == "AMD EPYC (family 25, model 17)"
    cpuinfo.write_text("model name\t: Some CPU\n")
    assert cpu_model(cpuinfo) == "Some CPU"
    assert cpu_model(pathlib.Path(tmp_path / "missing")) == (platform.processor() or platform.machine())


def test_machine_description_carries_the_vector_instructions():
    info = machine()
    assert info["cpu_capability"]  # e.g. AVX2, AVX512 (what torch's CPU kernels use)
    assert f", {info['cpu_capability']}, " in describe_machine(info)
    older = {k: v for k, v in info.items() if k != "cpu_capability"}  # cards written before it
    assert describe_machine(older).startswith(f"{info['processor']}, {info['cpu_count']} CPUs")
