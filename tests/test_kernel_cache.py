"""The kernels' disk cache is keyed by their sources (fo_edge.kernels): an edit to any kernel module, or another
Numba, compiles afresh instead of running stale machine code inlined from the old source."""
from pathlib import Path

import numba

import fo_edge.kernels as kernels


def test_the_cache_folder_is_named_after_every_kernel_source(tmp_path):
    for name, text in (("a.py", "x = 1\n"), ("b.py", "y = 2\n")):
        (tmp_path / name).write_text(text)
    first = kernels.cache_name(tmp_path, "0.61.0")
    assert first == kernels.cache_name(tmp_path, "0.61.0") and first.startswith("numba-") and len(first) == 22
    (tmp_path / "b.py").write_text("y = 3\n")  # an inlined helper changes in another module
    second = kernels.cache_name(tmp_path, "0.61.0")
    assert second != first
    assert kernels.cache_name(tmp_path, "0.62.0") != second
    (tmp_path / "notes.txt").write_text("not a source")
    (tmp_path / "__init__.py").write_text("# the cache's own set-up, no kernels")
    assert kernels.cache_name(tmp_path, "0.61.0") == second


def test_numba_caches_the_kernels_in_their_source_keyed_folder():
    folder = Path(numba.config.CACHE_DIR)
    assert folder.name == kernels.cache_name(Path(kernels.__file__).parent, numba.__version__)
    assert folder.is_dir()
