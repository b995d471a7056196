"""Stage 2, one trial: build its components, train it epoch by epoch, evaluate, checkpoint.

``trainer`` holds the loop (:func:`~patchbench.train.trainer.train_trial`); ``checkpoint``
the per-epoch state on disk; ``runtime`` threads, device and precision; ``preflight`` the
checks that components fit the data before anything trains; ``estimate`` what a grid costs
here. Where a trial runs (this process, a Ray worker) is :mod:`patchbench.run`'s business.
"""
