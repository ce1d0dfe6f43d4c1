"""Transfer learning: reuse a pretrained backbone on a new task.

Three ways to use a backbone on a new, small dataset, from cheapest to most flexible:

* **linear probe** - freeze the whole backbone and train only a new classifier on its
  features (Donahue et al. 2014, "DeCAF"; the standard measure of how good features are);
* **fine-tuning** - train everything, starting from the pretrained weights, usually with
  smaller learning rates for the early, generic stages than for the late, task-specific
  ones (Yosinski et al. 2014 measured how transferable each depth is; Howard & Ruder 2018
  call the per-stage rates *discriminative fine-tuning*);
* **from scratch** - the same network, randomly initialised: the baseline that says what
  the pretraining bought.

Three modules, read in this order:

* :mod:`~minibones.transfer.stages` - the parameters by stage (:func:`stage_groups`, from
  the model's ``feature_info``, so for every family), :func:`freeze` and :func:`unfreeze`,
  and :func:`param_groups`, one learning rate per stage;
* :mod:`~minibones.transfer.experiment` - :func:`transfer_experiment` runs the three
  recipes on one dataset with :func:`minibones.train.fit`;
* :mod:`~minibones.transfer.label_efficiency` - how many labels pretrained features save,
  measured cheaply as a *label-efficiency curve* (accuracy against labelled images per
  class): a frozen trunk run once (:func:`split_at`, :func:`run_trunk`), a logistic
  regression on its features (:func:`linear_probe`), one fixed budget for every trained
  recipe (:func:`train_steps`), and the curve over seeds (:class:`LabelEfficiency`).
"""

from minibones.transfer.experiment import ALL_RECIPES, RECIPES, TransferResult, class_subset, transfer_experiment
from minibones.transfer.label_efficiency import (LabelEfficiency, LinearProbe, accuracy, labelled_subset, linear_probe,
                                                 recalibrate_batchnorm, resize_inputs, run_trunk, split_at, train_steps)
from minibones.transfer.stages import (CLASSIFIER, HEAD, FrozenBatchNorm2d, freeze, freeze_up_to, param_groups,
                                       stage_groups, trainable_summary, unfreeze)

__all__ = [
    "ALL_RECIPES", "CLASSIFIER", "HEAD", "FrozenBatchNorm2d", "LabelEfficiency", "LinearProbe", "RECIPES",
    "TransferResult", "accuracy", "class_subset", "freeze", "freeze_up_to", "labelled_subset", "linear_probe",
    "param_groups", "recalibrate_batchnorm", "resize_inputs", "run_trunk", "split_at", "stage_groups",
    "train_steps", "trainable_summary", "transfer_experiment", "unfreeze",
]
