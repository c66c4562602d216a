"""The library behind the scripts, in packages named after the stages the data goes through.

``data`` (files, lists, decoded batches) -> ``model`` (description, checkpoints, execution)
-> ``train`` and ``evaluation`` (metrics, analysis, report) -> ``inference`` (runtimes,
exports, bulk outputs); ``benchmarks`` measures them all.  The modules at this level are
the base every stage uses: the command line (``cli``, ``settings``), file safety
(``fileio``, ``names``), the project's folders (``layout``) and processes (``distributed``).

Importing it first checks that the packages the scripts need are there: a script started
with a Python that lacks them (outside the project's ``.venv``) says how to run it, in one
line, instead of a ``ModuleNotFoundError`` traceback.
"""
import importlib.util
import sys

_NEEDED = ("numpy", "PIL", "torch", "tqdm")


def _check_environment() -> None:
    missing = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        print(f"error: {', '.join(missing)} not installed for {sys.executable}: run the scripts "
              "with the project's environment (`make train` creates it), e.g. "
              "`.venv/bin/python <script>.py`, or `source .venv/bin/activate` first",
              file=sys.stderr)
        raise SystemExit(2)


_check_environment()
