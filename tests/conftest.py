"""Suite-wide settings: one thread per test process, and no network.

``make test`` runs two pytest workers on two cores; the scripts the tests start inherit
OMP_NUM_THREADS=1 too.  Tiny tensors gain nothing from intra-op threads, and two workers
each spinning two threads on two cores mostly wait on each other.

No test may reach the internet (a machine that happens to have it would download ImageNet
weights and train another recipe than the test expects): every HTTP(S) request of this
process and of the scripts it starts goes to a closed local port and fails at once, while
servers a test starts on the loopback stay reachable.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
for _variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
    os.environ[_variable] = "http://127.0.0.1:9"
os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"

import torch  # noqa: E402  (after the variable, so child processes and torch both see it)

torch.set_num_threads(1)
