"""Runs a script (training/train.py, distill.py) and reports, as each process calls Accelerator.end_training, how many
DistributedDataParallel modules are still alive: the script must free its prepared model first, or the DDP reducer
may become the last owner of the process group and hang the process at exit (training/run_setup.py's end_processes).

    accelerate launch --multi_gpu --num_processes 2 tests/ddp_release_check.py training/train.py [options]
"""

import gc
import os
import runpy
import sys

import accelerate
from torch.nn.parallel import DistributedDataParallel

end_training = accelerate.Accelerator.end_training


def counting_end_training(self):
    live = sum(isinstance(candidate, DistributedDataParallel) for candidate in gc.get_objects())
    print(f"rank {os.environ.get('RANK')}: {live} DDP modules alive at end_training", file=sys.stderr, flush=True)
    end_training(self)


accelerate.Accelerator.end_training = counting_end_training
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(sys.argv[0]))))
runpy.run_path(sys.argv[0], run_name="__main__")
