"""Suspected label errors in ``train/``, ranked from the training run's own forward passes.

The area under the margin (AUM; Pleiss, Zhang, Elenberg and Weinberger, "Identifying
Mislabeled Data using the Area Under the Margin Ranking", NeurIPS 2020): at every training
step, each image's *margin* is its given class's logit minus the largest other logit.  A
correctly labelled image is soon pushed to a positive margin by its whole class; a
mislabelled one is pulled towards its true class by the images like it and only memorised
late, so its margin stays low or negative for most of training.  Averaged over every step
that saw the image, the lowest are the suspects, and the class whose logits were highest
instead (later passes weighing more) is the suggestion.

It costs no extra training: the loop hands each step's logits over
(:meth:`MarginAccumulator.update`), a few tensor operations on the training device with no
host synchronisation, keeping 8 bytes per image (and, for the suggestion, 4 per image and
class while that stays under :data:`LOGIT_SUM_BUDGET`).  The tallies go into the
checkpoints, so a resumed run keeps its earlier epochs.  Confident learning (Northcutt et
al., 2021; the AGPL ``cleanlab``) was not used: it needs out-of-fold probabilities for
every training image, that is, extra trainings.
"""
from __future__ import annotations

import io
import math
import os
from typing import Callable, Sequence

import torch

from utils.data.lists import annotation_path
from utils.fileio import CsvWriter, write_atomic

#: The suggestion comes from summed logits while they take at most this many bytes; beyond
#: (hundreds of classes, millions of images) from each image's latest runner-up.
LOGIT_SUM_BUDGET = 256 * 2**20
#: The columns of ``label_issues.csv``.
COLUMNS = ("rank", "path", "given", "suggested", "score")


class MarginAccumulator:
    """Per-image sums of the training margins, updated from each training step's logits.

    Args:
        num_samples: images in the training list (the batches' ``lines`` index it).
        num_classes: the model's classes.
        device: where the sums live: the training device, so updates never copy to the host.
    """

    def __init__(self, num_samples: int, num_classes: int, device="cpu"):
        device = torch.device(device)
        self.margin_sum = torch.zeros(num_samples, dtype=torch.float32, device=device)
        self.count = torch.zeros(num_samples, dtype=torch.int32, device=device)
        keep_logits = num_samples * num_classes * 4 <= LOGIT_SUM_BUDGET
        self.logit_sum = (torch.zeros(num_samples, num_classes, dtype=torch.float32,
                                      device=device) if keep_logits else None)
        self.runner_up = None if keep_logits else torch.full(
            (num_samples,), -1, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor, lines: torch.Tensor) -> None:
        """Record one training step: the (B, C) ``logits`` as the forward pass made them (any
        dtype), the given ``labels`` and the images' ``lines`` in the training list.  An
        image twice in a step (a padded shard) counts twice."""
        logits = logits.detach().float()
        labels = labels.to(logits.device)
        lines = lines.to(self.margin_sum.device, non_blocking=True)
        given = logits.gather(1, labels[:, None]).squeeze(1)
        best_other, which = logits.scatter(1, labels[:, None], -math.inf).max(dim=1)
        self.margin_sum.index_add_(0, lines, (given - best_other).to(self.margin_sum.device))
        self.count.index_add_(0, lines, torch.ones_like(lines, dtype=torch.int32))
        if self.logit_sum is not None:
            # The k-th pass over an image weighs k: the suggestion should be what the model
            # leans to once it knows the classes, not its first guesses.
            weight = self.count[lines].to(self.logit_sum.device, torch.float32)
            self.logit_sum.index_add_(0, lines, logits.to(self.logit_sum.device) * weight[:, None])
        else:
            self.runner_up[lines] = which.to(self.runner_up.device)

    def _tallies(self) -> dict[str, torch.Tensor]:
        kept = "logit_sum" if self.logit_sum is not None else "runner_up"
        return {"margin_sum": self.margin_sum, "count": self.count, kept: getattr(self, kept)}

    def merged(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> "MarginAccumulator":
        """A copy holding the tallies of every process of the job (``reduce``: an in-place
        all-reduce sum, as ``Dist.all_reduce``; every process must call it).  Each process
        keeps counting only its own steps, so merging again later counts nothing twice; the
        runner-up fallback keeps this process's own."""
        copy = MarginAccumulator.__new__(MarginAccumulator)
        copy.margin_sum = reduce(self.margin_sum.clone())
        copy.count = reduce(self.count.clone())
        copy.logit_sum = None if self.logit_sum is None else reduce(self.logit_sum.clone())
        copy.runner_up = None if self.runner_up is None else self.runner_up.clone()
        return copy

    def scores(self) -> torch.Tensor:
        """Each image's area under the margin (its mean margin); NaN for one never seen."""
        count = self.count.float()
        return torch.where(count > 0, self.margin_sum / count.clamp(min=1),
                           torch.full_like(count, math.nan)).cpu()

    def suggestions(self, labels: torch.Tensor) -> torch.Tensor:
        """Per image, the class other than its label it looked most like: the largest
        logit among the others, summed over its passes with the k-th weighing k (or, past
        the budget, its latest runner-up)."""
        if self.logit_sum is None:
            return self.runner_up.cpu()
        labels = labels.to(self.logit_sum.device)
        return self.logit_sum.scatter(1, labels[:, None], -math.inf).argmax(dim=1).cpu()

    def ranking(self, samples: Sequence[tuple[int, str]], classes: Sequence[str],
                max_score: float | None = 0.0) -> list[dict]:
        """``label_issues.csv`` rows, most suspect first: ``rank, path, given, suggested,
        score`` (the AUM: lower is more suspect).

        ``samples`` are the training list's ``(class_id, path)`` lines.  Listed: the images
        whose score is at most ``max_score`` (default 0: on average another class's logit
        beat the given one); ``None`` lists every image seen.
        """
        labels = torch.tensor([label for label, _ in samples], dtype=torch.int64)
        scores, suggested = self.scores(), self.suggestions(labels)
        listed = ~torch.isnan(scores)
        if max_score is not None:
            listed &= scores <= max_score
        order = [i for i in torch.argsort(scores, stable=True).tolist() if listed[i]]
        return [{"rank": rank, "path": samples[i][1], "given": classes[labels[i]],
                 "suggested": classes[int(suggested[i])], "score": round(float(scores[i]), 4)}
                for rank, i in enumerate(order, 1)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The tallies, for a checkpoint (a resumed run keeps its earlier epochs)."""
        return {name: tensor.cpu() for name, tensor in self._tallies().items()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; tallies that do not fit this run raise ValueError."""
        mine = self._tallies()
        if not isinstance(state, dict) or set(state) != set(mine):
            raise ValueError("the saved margins are not this run's")
        for name, tensor in mine.items():
            saved = state[name]
            if not isinstance(saved, torch.Tensor) or saved.shape != tensor.shape \
                    or saved.dtype != tensor.dtype:
                raise ValueError(f"the saved margins ({name}) do not fit this training list")
            tensor.copy_(saved.to(tensor.device))


def write_label_issues(path: str | os.PathLike, rows: Sequence[dict],
                       base: str | os.PathLike) -> None:
    """Write ``label_issues.csv`` (a header alone when nothing is suspect); paths as the
    training list in folder ``base`` writes them, so ``relabel.csv`` can name them alike."""
    base = os.path.abspath(base)
    buffer = io.StringIO(newline="")
    writer = CsvWriter(buffer)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([annotation_path(row["path"], base) if c == "path" else row[c]
                         for c in COLUMNS])
    write_atomic(path, buffer.getvalue())
