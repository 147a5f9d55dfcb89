"""Run a script against another checkout of fo-edge (a git worktree of an older commit), so that old and new
code can be timed in one session: ``python tools/run_at.py WORKTREE SCRIPT [ARGS...]``.

The editable install's import hook is dropped and WORKTREE goes first on sys.path, so ``import fo_edge`` finds
the old package; the script's own folder is on the path too (the benchmarks import ``timing``).
"""
import os
import runpy
import sys


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: python tools/run_at.py WORKTREE SCRIPT [ARGS...]")
    worktree, script = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    if not os.path.isdir(os.path.join(worktree, "fo_edge")):
        sys.exit(f"error: {worktree} holds no fo_edge package")
    sys.meta_path[:] = [finder for finder in sys.meta_path
                        if "editable" not in type(finder).__name__.lower()
                        and "editable" not in str(getattr(finder, "__module__", ""))]
    sys.path[:0] = [worktree, os.path.dirname(script)]
    sys.argv = [script, *sys.argv[3:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
