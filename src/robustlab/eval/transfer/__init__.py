"""``robustlab transfer STUDY.yaml``: surrogates x targets. Adversarial examples are crafted once per surrogate and
attack (stored in the study folder chunk by chunk, so an interrupted study resumes and never crafts a chunk twice),
then judged on every target.

A transfer study file::

    name: transfer_mnist5k
    surrogates:                       # run folders (checkpoint last | best), RUN@E, every trial of a study, ...
      - {run: runs/sgd, label: SGD}
      - {run: runs/sgd@4, label: SGD early-stopped (epoch 4)}
      - {study: runs/studies/sam_surrogates, checkpoint: last}   # labelled by each trial's label (seeds pool)
    targets:
      - {run: runs/vgg}
      - {model: mypkg.nets:build, weights: w.safetensors, label: external}
    attacks:                          # default: BIM, L-inf 4/255, step eps/10, 50 iterations (LGV protocol)
      - {label: BIM}
      - {label: MI-DI-TI, decay: 1.0, di: {}, ti: {kernel: 7}}   # typed blocks: di {prob, rate, mode, per_sample}, ti {kernel, nsig}
    examples: correct_on_targets      # LGV: the first N test points every target classifies correctly; or all
    points: 1000

Success rate of surrogate s on target t, two denominators, both reported and named:

- ``all``: the fraction of the selected examples whose adversarial version the target misclassifies (with
  ``examples: correct_on_targets`` this is 1 - the target's accuracy on them, the LGV protocol's rate);
- ``correct``: the same fraction among the examples that both the surrogate and the target classify correctly.

Each surrogate's sharpness (robustlab.diagnostics.sharpness: top Hessian eigenvalue and trace of its training
loss) is measured once (or read from ``<run>/sharpness/``) and drawn against its mean success over targets.
"""
from robustlab.eval.transfer.config import ModelRef, TransferAttackConfig, TransferStudyConfig, load_transfer_study
from robustlab.eval.transfer.entries import Entry, expand
from robustlab.eval.transfer.study import TransferStudy, run_transfer

__all__ = ["ModelRef", "TransferAttackConfig", "TransferStudyConfig", "load_transfer_study", "Entry", "expand",
           "TransferStudy", "run_transfer"]
