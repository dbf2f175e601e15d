"""`tlc tune`: hyperparameter search over a spec's `tune.space`, on Optuna, whose trials share
the frozen-prefix features (a search costs little more than one run).

`config` is the `tune:` section's language (pydantic, no Optuna), `space` sets trial values at
spec paths and checks those paths, `objective` runs one trial through the library's training
entry point, `study` opens the storage and runs workers, `outputs` writes what a person reads.
Only `objective`, `study` and `outputs` import Optuna.
"""
