"""Settings for the whole test process.

One torch thread: the unit tests run many small tensors, where OpenMP's threads
cost more than they give, and on a 2-core machine with anything else running two
threads spin-wait on each other (measured: a ResNet-50 forward at 64x64 took
1.6 s with 2 threads and 0.05 s with 1).

When the tests run in several processes at once (pytest-xdist, ``-n auto``), the
notebooks' kernels, which nbval starts as child processes, get one thread too,
through the environment they inherit; run alone, a kernel keeps torch's default.
"""

import os

import torch

torch.set_num_threads(1)
if "PYTEST_XDIST_WORKER" in os.environ:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
