"""What a run guarantees, per model family and backend: the capability matrix.

One row per (family, backend) a model can be trained on, one column per guarantee. ``True``: the guarantee holds,
and tests/test_capabilities.py runs a short run of that cell and checks it. A string: a known gap, saying what
is missing, and the test checks that it really is missing. A cell without every column fails the test, so a new
family or backend cannot arrive with a hole nobody wrote down.

Guarantees: ``memory`` device memory planned before the run (refused if it cannot fit) and recorded;
``checkpoint`` checkpoints every N steps; ``resume`` ``--resume`` continues from the last one; ``counters`` the
kernels' counter schema in run.json; ``energy`` energy from those counters; ``health`` numeric health checks stop
a diverging run and record it as stopped; ``export`` the verified exports (``onnx``: fp32 ONNX, ``onnx-int8``: also
the integer graph of an int8 device, ``nir``: NIR); ``diagnose`` ``fo-edge diagnose RUN_DIR``.
"""
from __future__ import annotations

__all__ = ["GUARANTEES", "CAPABILITIES", "EXPORTS", "markdown_table"]

GUARANTEES = ("memory", "checkpoint", "resume", "counters", "energy", "health", "export", "diagnose")
#: the ``export`` values that are not gaps
EXPORTS = ("onnx", "onnx-int8", "nir")

_ALL = {name: True for name in GUARANTEES if name != "export"}

CAPABILITIES: dict[tuple[str, str], dict[str, bool | str]] = {
    ("mlp", "numba"): {**_ALL, "export": "onnx-int8"},
    ("mlp", "torch"): {**_ALL, "export": "onnx"},
    ("spiking", "numba"): {**_ALL, "export": "nir"},
    ("spiking", "torch"): {**_ALL, "export": "nir"},
    ("conv", "numba"): {**_ALL, "export": "onnx-int8"},
    ("conv", "torch"): {**_ALL, "export": "onnx"},
    ("mano", "torch"): {**_ALL, "export": "onnx"},
    ("mano", "numba"): {**_ALL, "export": "onnx"},
}


def markdown_table() -> str:
    """The matrix as docs/ARCHITECTURE.md shows it: yes, the export kind, or no (a gap)."""
    rows = ["| family, backend | " + " | ".join(GUARANTEES) + " |", "|---|" + "---|" * len(GUARANTEES)]
    for (family, backend), row in CAPABILITIES.items():
        cells = ["yes" if v is True else "no" if str(v).startswith("gap") else str(v) for v in map(row.get, GUARANTEES)]
        rows.append(f"| {family}, {backend} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
