"""The training script (train.py) and the pieces it is built from, importable as `training.<module>` from the
repository root (tests, benchmarks, scripts). `python training/train.py` puts the root on sys.path itself."""
