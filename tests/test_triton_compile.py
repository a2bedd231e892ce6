"""Every Triton kernel compiles with the real compiler for sm_80 and sm_90, ahead of time and
without a GPU, for every specialisation its launcher can launch (the `triton_specialisations()`
generators beside the launchers in robustkernels/ops), and none spills to local memory.

The interpreter (TRITON_INTERPRET=1, set by conftest.py) accepts code the compiler rejects, and
under it @triton.jit gives interpreter objects, so the compiles run in a subprocess without it:
this file run as a script, one worker process per core (compiles are cached in Triton's
cache like any launch). It writes the registers, spills and stack of every compiled kernel
(the bundled ptxas -v --gpu-name=sm_XX on its PTX) and its shared memory (Triton's
metadata) to benchmarks/results/triton-resources.csv.
"""

import csv
import functools
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "benchmarks" / "results" / "triton-resources.csv"
CAPABILITIES = (80, 90)
COLUMNS = (
    "kernel",
    "target",
    "constexprs",
    "argument_types",
    "options",
    "registers",
    "spill_store_bytes",
    "spill_load_bytes",
    "stack_frame_bytes",
    "shared_bytes",
)
_PTXAS_USAGE = re.compile(r"Used (\d+) registers")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


@functools.cache
def specialisations():
    """Every launcher's specialisations, each once, in a fixed order."""
    import robustkernels.ops

    unique = {}
    for module in pkgutil.iter_modules(robustkernels.ops.__path__):
        generate = getattr(
            importlib.import_module(f"robustkernels.ops.{module.name}"), "triton_specialisations", None
        )
        for spec in generate() if generate is not None else ():
            unique.setdefault(spec.key, spec)
    return [unique[key] for key in sorted(unique, key=str)]


def jit_sources():
    """{name: source} of every @triton.jit function in robustkernels/triton."""
    import triton

    import robustkernels.triton

    found = {}
    for module in pkgutil.iter_modules(robustkernels.triton.__path__):
        namespace = importlib.import_module(f"robustkernels.triton.{module.name}")
        for name, value in vars(namespace).items():
            if isinstance(value, triton.runtime.JITFunction) and value.__module__ == namespace.__name__:
                found[name] = value.src
    return found


def _ptxas_report(ptx: str, capability: int) -> dict:
    """Registers, spills and stack of one PTX from the bundled ptxas -v."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        command = [get_ptxas(capability).path, "-v", f"--gpu-name={sm_arch_from_capability(capability)}"]
        done = subprocess.run(
            [*command, str(source), "-o", os.devnull], capture_output=True, text=True, check=True
        )
    usage, frame = _PTXAS_USAGE.search(done.stderr), _PTXAS_FRAME.search(done.stderr)
    if usage is None or frame is None:
        raise RuntimeError(f"no ptxas -v figures in:\n{done.stderr}")
    stack, stores, loads = (int(v) for v in frame.groups())
    return dict(
        registers=int(usage.group(1)),
        spill_store_bytes=stores,
        spill_load_bytes=loads,
        stack_frame_bytes=stack,
    )


def _compile(task):
    """Compiles specialisation `index` for one capability: a CSV row, or the compiler's error."""
    index, capability = task
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import sm_arch_from_capability
    from triton.compiler import ASTSource

    spec = specialisations()[index]
    kernel, constexprs, types, options = spec.key
    row = dict(
        kernel=kernel,
        target=sm_arch_from_capability(capability),
        constexprs=constexprs,
        argument_types=types,
        options=options,
    )
    pointers = [i for i, (_, kind) in enumerate(spec.signature) if kind.startswith("*")]
    source = ASTSource(
        spec.kernel,
        dict(spec.signature),
        constexprs=dict(spec.constexprs),
        # torch allocations are 16-byte aligned: what Triton specialises a typical launch on
        attrs={(i,): [["tt.divisibility", 16]] for i in pointers},
    )
    try:
        # every stage, down to the cubin Triton would load
        compiled = triton.compile(
            source, target=GPUTarget("cuda", capability, 32), options=dict(spec.options)
        )
    except Exception as error:  # every compiler failure is reported, not raised
        cause = error
        while cause.__cause__ is not None:  # a CompilationError wraps what the compiler rejected
            cause = cause.__cause__
        return dict(row, error=f"{type(error).__name__}: {error}\ncaused by {type(cause).__name__}: {cause}")
    return dict(row, **_ptxas_report(compiled.asm["ptx"], capability), shared_bytes=compiled.metadata.shared)


def compile_all(workers: int) -> list[dict]:
    tasks = [(i, capability) for i in range(len(specialisations())) for capability in CAPABILITIES]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_compile, tasks))


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, __file__], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def test_every_kernel_is_compiled(compiled):
    """Each kernel has a launcher's specialisation, or is called from a kernel that has one."""
    functions = compiled["sources"]
    launched = {row["kernel"] for row in compiled["rows"]}
    reached, frontier = set(launched), set(launched)
    while frontier:
        callers = [functions[name] for name in frontier]
        frontier = {
            name for name in functions if name not in reached and any(f"{name}(" in s for s in callers)
        }
        reached |= frontier
    assert set(functions) - reached == set()


def test_every_specialisation_compiles_without_spills(compiled):
    errors = [
        f"{r['kernel']} {r['target']} {r['constexprs']}: {r['error']}"
        for r in compiled["rows"]
        if "error" in r
    ]
    assert errors == [], "\n\n".join(errors)
    rows = sorted(compiled["rows"], key=lambda r: tuple(str(r[c]) for c in COLUMNS))
    with RESOURCES.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    spills = [r for r in rows if r["spill_store_bytes"] or r["spill_load_bytes"]]
    assert spills == [], "\n".join(f"{r['kernel']} {r['target']} {r['constexprs']}: {r}" for r in spills)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    results = compile_all(workers=os.cpu_count() or 1)
    print(json.dumps({"rows": results, "sources": jit_sources()}))
