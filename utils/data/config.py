"""The settings of ``txt_annotation.py``: which dataset, where the lists go, how to hold out,
what the audit flags, and a reviewed relabelling to apply or undo first."""
from __future__ import annotations

from dataclasses import dataclass

from utils.cli import UserError, default_workers
from utils.data.archives import DEFAULT_MAX_RATIO, RATIO_ENV
from utils.data.cifar10 import ARCHIVE_ENV
from utils.data.splits import MAX_FRACTION
from utils.layout import DATASETS, DEFAULT_CLASSES
from utils.settings import MAX_WORKERS, above, between, setting

#: The largest --tiny-side: an image side no camera reaches.
MAX_SIDE = 100_000


@dataclass
class AnnotationConfig:
    """Import or export a dataset if asked, then write the annotation files."""

    datasets: str = setting(DATASETS, "dataset folder with train/<class>/ and test/<class>/",
                            metavar="DIR")
    classes: str = setting(DEFAULT_CLASSES, "class list to write", metavar="FILE")
    out_dir: str = setting(".", "folder for cls_train.txt, cls_val.txt and cls_test.txt",
                           metavar="DIR")
    val_fraction: float = setting(0.1, "without a val/ folder: the share of each train class "
                                  "held out to pick the best epoch",
                                  valid=between(0, MAX_FRACTION), metavar="F")
    test_fraction: float = setting(0.1, "without a test/ folder: the share of each train class "
                                   "held out for the final score",
                                   valid=between(0, MAX_FRACTION), metavar="F")
    split_seed: int = setting(0, "seed of the held-out choice", valid=between(0, 2**32 - 1),
                              metavar="N")
    cifar10: bool = setting(False, "export CIFAR-10 into the dataset folder first, downloading "
                            "the official archive into the class list's folder if needed",
                            switch=True)
    cifar10_archive: str | None = setting(None, "a local cifar-10-python.tar.gz to export "
                                          "instead (implies --cifar10)", metavar="PATH",
                                          auto=f"${ARCHIVE_ENV} if set")
    source: str | None = setting(None, "import a folder or a .zip / .tar / .tar.gz archive "
                                 "holding train/<class>/ and test/<class>/ first",
                                 flag="--from", metavar="PATH")
    max_ratio: float | None = setting(None, "refuse an archive given to --from that unpacks to "
                                      "more than N times its size, a likely zip bomb",
                                      valid=above(0, 1e6), metavar="N",
                                      auto=f"${RATIO_ENV} if set, else {DEFAULT_MAX_RATIO:g}")
    force: bool = setting(False, "replace a dataset already in the dataset folder", switch=True)
    workers: int = setting(default_workers(8), "processes checking images; 0 checks in this "
                           "process", valid=between(0, MAX_WORKERS), metavar="N")
    keep_leaks: bool = setting(False, "keep held-out images that copy an image of another "
                               "split in their lists (by default they are dropped, so the "
                               "held-out figures stay honest; dataset_audit.csv lists them "
                               "either way)", switch=True)
    tiny_side: int | None = setting(None, "flag images whose shorter side is under N pixels "
                                    "as tiny in dataset_audit.csv; 0 flags none",
                                    valid=between(0, MAX_SIDE), metavar="N",
                                    auto="a quarter of the training images' median shorter "
                                         "side, at most 32")
    apply: str | None = setting(None, "first move the images a reviewed relabel.csv lists "
                                "(columns path,class; class _removed takes an image out of "
                                "the dataset) into their new class folders, never deleting "
                                "anything, then write the annotation files", metavar="CSV")
    undo: bool = setting(False, "first put back the images the last --apply moved, then write "
                         "the annotation files", switch=True)

    @property
    def wants_cifar10(self) -> bool:
        """CIFAR-10 is to be exported (``--cifar10-archive`` implies ``--cifar10``)."""
        return self.cifar10 or self.cifar10_archive is not None

    def check(self) -> None:
        if self.wants_cifar10 and self.source:
            raise UserError("--cifar10 and --from are alternatives: give one")
        if self.apply is not None and self.undo:
            raise UserError("--apply and --undo are alternatives: give one")
        if (self.apply is not None or self.undo) and (self.wants_cifar10 or self.source):
            flag = "--undo" if self.undo else "--apply"
            raise UserError(f"{flag} changes the dataset already in place: run it without "
                            "--from or --cifar10")
