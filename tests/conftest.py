"""Settings for the whole test process.

One torch thread: the unit tests run many small tensors, where OpenMP's threads
cost more than they give, and on a 2-core machine with anything else running two
threads spin-wait on each other (measured: a ResNet-50 forward at 64x64 took
1.6 s with 2 threads and 0.05 s with 1). Notebooks under nbval run in their own
kernels with torch's defaults.
"""

import torch

torch.set_num_threads(1)
