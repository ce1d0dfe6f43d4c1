"""Settings for the whole test process (at the top of the repository, so that they hold
for any selection: ``pytest tests``, ``pytest --nbval notebooks/02_resnet.ipynb``, both).

One torch thread: the unit tests run many small tensors, where OpenMP's threads
cost more than they give, and on a 2-core machine with anything else running two
threads spin-wait on each other (measured: a ResNet-50 forward at 64x64 took
1.6 s with 2 threads and 0.05 s with 1).

When the tests run in several processes at once (pytest-xdist, ``-n auto``), the
notebooks' kernels, which nbval starts as child processes, get one thread too,
through the environment they inherit; run alone, a kernel keeps torch's default.

Inductor compiles in this process rather than in a pool of worker processes: the
pool's start-up (each worker imports torch) cost more than it saved on 2 cores
(measured in the full suite: resnet18's inductor test took 29 s with the pool, 7 s without).
"""

import os

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # after setting the variable inductor reads when it is imported

torch.set_num_threads(1)
if "PYTEST_XDIST_WORKER" in os.environ:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
