import os
import tempfile

# No network in tests: every Hub or datasets lookup must resolve from local folders and caches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The measured "auto" precision is cached per machine; the suite keeps its own cache, not the user's (under HF_HOME).
os.environ.setdefault("SIMPLE_DDPM_CACHE", tempfile.mkdtemp(prefix="simple_ddpm_cache_"))
# One intra-op thread per process: the tests' tensors are tiny, and two threads on a busy 2-core machine wait on
# each other for milliseconds per op (measured: 12 ms for an exp of 4k elements). Subprocesses inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
