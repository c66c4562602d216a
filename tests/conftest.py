"""Suite-wide settings: one thread per test process.

``make test`` runs two pytest workers on two cores; the scripts the tests start inherit
OMP_NUM_THREADS=1 too.  Tiny tensors gain nothing from intra-op threads, and two workers
each spinning two threads on two cores mostly wait on each other.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the variable, so child processes and torch both see it)

torch.set_num_threads(1)
