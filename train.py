"""Train a classifier on the annotated folders: ``python train.py [--flag value ...]``.

Pass flags (every setting of :class:`utils.train.config.TrainConfig` is one: ``--backbone
resnet50 --epochs 30``), load a saved config with ``--config logs/<run>/config.json``, or
edit the defaults in ``utils/train/config.py``.
``--resume logs/<run>/last.pth`` continues a stopped run exactly where it stopped.
Many GPUs: ``torchrun --nproc_per_node 4 train.py ...`` (see the README).
"""
from __future__ import annotations

from utils.cli import run
from utils.settings import parse
from utils.train.config import TrainConfig
from utils.train.prepare import resolve_run, start_training


def main(argv=None) -> int:
    cfg, explicit = parse(TrainConfig, argv, description=__doc__.splitlines()[0],
                          config_file=True)
    start_training(resolve_run(cfg, explicit)).fit()
    return 0


if __name__ == "__main__":
    run(main)
