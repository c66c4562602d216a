"""Untrusted files are never executed, and a failed checkpoint write never costs a checkpoint.

* Every ``torch.load`` in the code base passes ``weights_only=True`` (checked on the syntax
  tree, so formatting cannot hide a call).
* A ``.pth`` whose pickle runs code when loaded (a "weights" file from a stranger) is refused
  by every command that reads one, with a one-line error, and its code never runs.
* A full disk or a read-only ``logs/`` during a checkpoint write is a clear error; the
  previous checkpoint stays intact and loadable and no temporary file is left behind.

Archives that try to escape ``datasets/`` (``..``, absolute paths, links, in zip and tar)
are covered by ``tests/test_dataset_import.py``.
"""
from __future__ import annotations

import ast
import errno
import os
import tempfile
from pathlib import Path

import pytest
import torch

import train
import txt_annotation
from tests.helpers import ROOT, assert_clean_error, make_dataset, run_script, working_directory
from tests.test_predict import make_checkpoint
from tests.test_train import FAST
from utils.cli import UserError
from utils.model import checkpoint
from utils.model.checkpoint import load_checkpoint, save_checkpoint
from utils.train.state import TrainState

# ---------------------------------------------------------------------------------------------
# weights_only everywhere


def product_sources() -> list[Path]:
    """Every Python file of the product (tests and the virtual environment excluded)."""
    skip = {".venv", "tests", ".git"}
    return sorted(p for p in ROOT.rglob("*.py")
                  if not skip.intersection(p.relative_to(ROOT).parts))


def test_every_torch_load_passes_weights_only_true():
    loads, unsafe = 0, []
    for path in product_sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("torch") and \
                    any(a.name in ("load", "load_state_dict_from_url") for a in node.names):
                unsafe.append(f"{where}: imported by name, so calls cannot be checked")
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = ast.unparse(node.func)
            if name in ("torch.load", "torch.hub.load_state_dict_from_url"):
                loads += 1
                flag = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    unsafe.append(f"{where}: {name} without weights_only=True")
            if name in ("np.load", "numpy.load") and any(
                    k.arg == "allow_pickle" for k in node.keywords):
                unsafe.append(f"{where}: {name} with allow_pickle")
            if name in ("pickle.load", "pickle.loads"):
                unsafe.append(f"{where}: unrestricted {name}")
    assert loads >= 2  # utils/checkpoint.py and the torch.hub download in nets/pretrained.py
    assert not unsafe, unsafe


# ---------------------------------------------------------------------------------------------
# A .pth that would run code


class Payload:
    """Unpickling this calls ``exec`` on a line that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """An annotated project with malicious weights files in it."""
    root = annotated_project(tmp_path_factory.mktemp("safe"))
    marker = root / "pwned"
    # A real checkpoint with the payload tucked in, as a tampered download would be ...
    make_checkpoint(root / "good.pth")
    ckpt = torch.load(root / "good.pth", weights_only=True)
    torch.save({**ckpt, "note": Payload(marker)}, root / "evil.pth")
    # ... and in torch's legacy (non-zip) format, which older tools still write.
    torch.save({**ckpt, "note": Payload(marker)}, root / "evil-legacy.pth",
               _use_new_zipfile_serialization=False)
    for name in ("evil.pth", "evil-legacy.pth"):  # the files really are malicious
        torch.load(root / name, weights_only=False)
        assert marker.exists(), name
        marker.unlink()
    return root


@pytest.mark.parametrize("script, args", [
    ("predict.py", ["datasets/test/red/000.png", "--model", "evil.pth"]),
    ("predict.py", ["datasets/test/red/000.png", "--model", "evil-legacy.pth"]),
    ("eval.py", ["--model", "evil.pth", "--workers", "0"]),
    ("train.py", ["--resume", "evil.pth"]),
    ("train.py", [*FAST, "--epochs", "1", "--model-path", "evil.pth"]),
], ids=["predict", "predict-legacy-pickle", "eval", "train-resume", "train-model-path"])
def test_a_pth_that_would_run_code_is_refused(project, script, args):
    result = run_script(script, *args, cwd=project)
    assert_clean_error(result, "refused", ".pth")
    assert not (project / "pwned").exists()
    assert not (project / "logs").exists()


# ---------------------------------------------------------------------------------------------
# Disk full / read-only folder during a checkpoint write

REAL_MKSTEMP = tempfile.mkstemp


def disk_full(*args, **kwargs):
    """``mkstemp`` whose file lives on a full disk: writing to it fails with ENOSPC.

    The temporary file is really created (its clean-up is under test); the descriptor
    handed back is /dev/full's, where every write fails as on a full disk.
    """
    fd, path = REAL_MKSTEMP(*args, **kwargs)
    os.close(fd)
    return os.open("/dev/full", os.O_WRONLY), path


def read_only(*args, **kwargs):
    # The tests run as root, which a chmod-ed folder would not stop.
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get("dir"))


needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"),
                                    reason="needs /dev/full to simulate a full disk")


@pytest.mark.parametrize("fault, message", [
    pytest.param(disk_full, "no space left", marks=needs_dev_full, id="disk-full"),
    pytest.param(read_only, "read-only", id="read-only"),
])
def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, fault, message):
    path = tmp_path / "last.pth"
    save_checkpoint({"epoch": 1, "weights": torch.ones(3)}, path)
    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", fault)
    with pytest.raises(UserError, match=f"(?i)could not write checkpoint .*last.pth.*{message}"):
        save_checkpoint({"epoch": 2, "weights": torch.zeros(3)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temporary file left
    previous = torch.load(path, weights_only=True)
    assert previous["epoch"] == 1 and torch.equal(previous["weights"], torch.ones(3))


@needs_dev_full
@pytest.mark.parametrize("full_at", ["last.pth", "best.pth"])
def test_disk_full_mid_run_stops_cleanly_and_the_run_resumes(tmp_path, monkeypatch, full_at):
    """The disk fills while epoch 2 saves ``full_at``: the run stops with one clear error,
    nothing is torn or left behind, and ``--resume`` completes the run once there is room.

    Whichever write fails, ``best.pth`` must in the end be the epoch that ``last.pth``
    records as best: a resumed run only rewrites best.pth for a *better* epoch, so a record
    that got ahead of the file would stay wrong for good.  To make both files written every
    epoch, every epoch counts as a new best here.
    """
    annotated_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    run_dir = Path("logs/full")
    saves = []

    def full_in_epoch_2(*args, **kwargs):
        if kwargs.get("prefix") == f".{full_at}.":
            saves.append(full_at)
            if len(saves) == 2:  # the second save of that file is epoch 2's
                return disk_full(*args, **kwargs)
        return REAL_MKSTEMP(*args, **kwargs)

    monkeypatch.setattr(TrainState, "improves", lambda self, top1: True)
    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", full_in_epoch_2)
    with pytest.raises(UserError, match=f"(?i)could not write checkpoint .*{full_at}.*no space"):
        train.main([*FAST, "--epochs", "2", "--run-name", "full"])
    assert len(saves) == 2
    assert [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")] == []
    last = load_checkpoint(run_dir / "last.pth")
    load_checkpoint(run_dir / "best.pth")

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", REAL_MKSTEMP)  # room again
    if last["epoch"] < 2:
        assert train.main(["--resume", str(run_dir / "last.pth")]) == 0
    last, best = load_checkpoint(run_dir / "last.pth"), load_checkpoint(run_dir / "best.pth")
    assert last["epoch"] == 2
    assert best["epoch"] == last["best_epoch"]


def annotated_project(root: Path) -> Path:
    """3 colour classes x 8 train / 2 test images under ``root``, annotated."""
    make_dataset(root, classes=("blue", "green", "red"), train=8, test=2)
    with working_directory(root):
        txt_annotation.main(["--workers", "0"])
    return root
