"""What every export shares: the checkpoint being exported, the parity check, and writing
the output so that a failed export leaves nothing behind.

**Parity check.** Every format ends with it: the exported model, run by its own runtime,
and the source checkpoint, run by PyTorch exactly as ``predict.py`` runs it, classify the
same images (a seeded sample of ``cls_val.txt`` when there is one, else generated smooth
colour fields), fed the same uint8 pixels of the evaluation preprocessing; each runner
normalises them as its format expects.  The check reports the top-1 agreement and the
largest probability difference.  A float format fails below :data:`FLOAT_MIN_AGREEMENT`
agreement or above :data:`FLOAT_MAX_PROB_DIFF` difference (float32 runtimes differ by
1e-7 to 1e-4 here; a wrong normalisation or channel order moves probabilities far more,
even where a top-1 label survives); int8 fails below :data:`INT8_MIN_AGREEMENT`, on
more images since one image is then a coarse half point.

**Output.** :func:`check_destination` refuses the source model itself and an existing
output without ``force`` before any work; :func:`staged_output` builds the export in a
hidden sibling and renames it into place only once it passed its check, replacing an
existing output (``--force``) only then.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from utils.cli import UserError
from utils.data.image import load_or_warn
from utils.data.lists import read_annotation
from utils.data.preprocess import eval_array
from utils.inference.classifier import Classifier, softmax
from utils.inference.onnx_export import source_of
from utils.inference.onnx_quantize import sample_images
from utils.inference.onnx_runtime import SOURCE_KEY, SPEC_KEY
from utils.layout import ANNOTATION_FILES

if TYPE_CHECKING:
    import torch

#: A float export must give the source's top-1 label on at least this share of images ...
FLOAT_MIN_AGREEMENT = 0.99
#: ... and move no probability by more than this.
FLOAT_MAX_PROB_DIFF = 1e-2
#: An int8 export is expected to move a few labels: below this agreement it is refused
#: (a CIFAR-10 MobileNetV2 x0.5 trained 3 epochs agreed on 97.0% of 200 held-out images,
#: an untrained one with random weights on 66%).
INT8_MIN_AGREEMENT = 0.90
#: Images each kind of check compares on.
PARITY_IMAGES = {"float": 32, "int8": 200}

#: uint8 (N, 3, H, W) pixels -> float32 logits (N, classes): a format's runtime.
Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class Parity:
    """How closely an export follows its source on ``images`` images."""

    images: int
    agreement: float
    max_prob_diff: float
    where: str

    def line(self) -> str:
        agreeing = round(self.agreement * self.images)
        return (f"top-1 agreement {self.agreement:.1%} ({agreeing}/{self.images}), largest "
                f"probability difference {self.max_prob_diff:.1e}, on {self.where}")


@dataclass
class ExportJob:
    """A checkpoint being exported: the classifier it loads as (PyTorch, CPU, float32:
    what ``predict.py`` runs), its description, and the images its exports are checked on.

    Attributes:
        classifier: the source model.
        annotation: where the parity images come from when it exists.
    """

    classifier: Classifier
    annotation: str = ANNOTATION_FILES["val"]
    _batches: dict[int, tuple[np.ndarray, str]] = field(default_factory=dict, repr=False)

    @property
    def spec(self):
        return self.classifier.spec

    @property
    def path(self) -> str:
        return self.classifier.info["path"]

    def network(self, typicality: bool = False) -> "torch.nn.Module":
        """A copy of the network to convert: CPU, float32, eval mode, BatchNorm folded as
        ``predict.py`` runs it, in the default memory format (converters trace it). With
        ``typicality``, the scoring network that adds the "unknown" score as a second output
        when the checkpoint has its statistics (the ONNX export, for ``--reject auto``)."""
        import torch

        runtime = self.classifier.runtime
        source = runtime.export_module if typicality else runtime.model
        model = copy.deepcopy(source).to("cpu", torch.float32)
        return model.to(memory_format=torch.contiguous_format).eval()

    def metadata(self) -> dict[str, str]:
        """What every format stores in its own metadata, as JSON text: the whole model
        description (``model_spec``, :meth:`ModelSpec.to_dict`) and where the weights
        came from (``source``: checkpoint, epoch, validation top-1)."""
        return {SPEC_KEY: json.dumps(self.spec.to_dict()),
                SOURCE_KEY: json.dumps(source_of(self.path, self.classifier.info))}

    def images(self, count: int) -> tuple[np.ndarray, str]:
        """``count`` uint8 (N, 3, H, W) images for the parity check, and what they are:
        a seeded sample of :attr:`annotation`'s images, topped up with generated ones."""
        if count not in self._batches:
            listed = self._listed_images(count)
            parts = [f"{len(listed)} images of {self.annotation}"] if len(listed) else []
            if len(listed) < count:
                extra = generated_images(self.spec.input_shape, count - len(listed))
                listed = np.concatenate([listed, extra]) if len(listed) else extra
                parts.append(f"{len(extra)} generated images")
            self._batches[count] = listed, " and ".join(parts)
        return self._batches[count]

    def _listed_images(self, count: int) -> np.ndarray:
        empty = np.empty((0, 3, *self.spec.input_shape), np.uint8)
        if not Path(self.annotation).is_file():
            return empty
        samples = sample_images(read_annotation(self.annotation, allow_empty=True), count)
        images = (load_or_warn(path) for _, path in samples)
        pixels = [eval_array(image, self.spec.geometry) for image in images if image is not None]
        return np.stack(pixels) if pixels else empty

    def parity(self, runner: Runner, kind: str = "float") -> Parity:
        """Compare ``runner`` with the source on :data:`PARITY_IMAGES` ``[kind]`` images;
        a :class:`UserError` when it falls short of the thresholds for ``kind``."""
        batch, where = self.images(PARITY_IMAGES[kind])
        expected = self.classifier.array_logits(batch)
        got = np.concatenate([runner(batch[i:i + 8]) for i in range(0, len(batch), 8)])
        if got.shape != expected.shape:
            raise UserError(f"the exported model outputs {got.shape[1:]} values per image, "
                            f"the source {expected.shape[1:]}")
        p_ref, p_got = softmax(expected.astype(np.float64)), softmax(got.astype(np.float64))
        result = Parity(len(batch), float((p_ref.argmax(1) == p_got.argmax(1)).mean()),
                        float(np.abs(p_ref - p_got).max()), where)
        if kind == "float" and (result.agreement < FLOAT_MIN_AGREEMENT
                                or not result.max_prob_diff <= FLOAT_MAX_PROB_DIFF):
            raise UserError(f"parity check failed: {result.line()}; a float export must agree "
                            f"on at least {FLOAT_MIN_AGREEMENT:.0%} of top-1 labels and move "
                            f"no probability by more than {FLOAT_MAX_PROB_DIFF:g}; nothing "
                            "written")
        if kind == "int8" and result.agreement < INT8_MIN_AGREEMENT:
            raise UserError(f"parity check failed: {result.line()}; int8 must agree on at "
                            f"least {INT8_MIN_AGREEMENT:.0%} of top-1 labels; nothing written")
        return result


def generated_images(input_shape: tuple[int, int], count: int, seed: int = 0) -> np.ndarray:
    """``count`` uint8 (N, 3, H, W) images that look like images, not noise: smooth colour
    fields with edges and a little grain (pure noise puts every model in one corner)."""
    rng = np.random.default_rng(seed)
    h, w = input_shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    images = []
    for _ in range(count):
        fields = [np.sin(xx / rng.uniform(2, 20) + rng.uniform(0, 6))
                  * np.cos(yy / rng.uniform(2, 20) + rng.uniform(0, 6)) for _ in range(3)]
        image = 127 + 100 * np.stack(fields) + rng.normal(0, 12, (3, h, w))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(images)


def check_destination(out: str | os.PathLike, source: str | os.PathLike, force: bool,
                      suffix: str = "", folder: bool = False) -> Path:
    """``out`` if an export may write it: never the model it exports (whatever ``force``
    says), an existing output only with ``force``, a name ending in ``suffix`` (when
    given), a file where a file is written and a folder where a folder is."""
    out = Path(out)
    if out.exists() and Path(source).exists() and os.path.samefile(out, source):
        raise UserError(f"refusing to write {out}: it is the model being exported")
    if suffix and not out.name.lower().endswith(suffix):
        raise UserError(f"cannot write {out}: the file name must end in {suffix}")
    if out.is_dir() and not folder:
        raise UserError(f"cannot write {out}: it is a folder; give a file name")
    if out.exists() and folder and not out.is_dir():
        raise UserError(f"cannot write {out}: it is a file, and this export is a folder")
    if out.exists() and not force:
        raise UserError(f"{out} exists: choose another name or pass --force to replace it")
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: folder {out.parent} does not exist")
    return out


@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A hidden sibling of ``out`` to build the export in (same file system, same suffix);
    renamed to ``out`` when the block ends normally, removed whatever happens."""
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")
    _remove(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"the export wrote nothing to {tmp}")
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        if out.exists():  # --force: the old output goes only once the new one is complete
            os.replace(out, old)
        os.replace(tmp, out)
        _remove(old)
    finally:
        _remove(tmp)


@contextlib.contextmanager
def converter_output_hidden() -> Iterator[None]:
    """Keep what a converter prints (progress bars, its C++ libraries' log lines, written
    to file descriptors 1 and 2 directly) off the console: it goes to a temporary file,
    whose end is shown only if the block fails, where it may say why."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy_of in zip((1, 2), saved):
                os.dup2(copy_of, fd)
                os.close(copy_of)
            if failed:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 3000))
                sys.stderr.write(log.read().decode(errors="replace"))


def size_on_disk(path: Path) -> int:
    """Bytes of a file, or of every file in a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
