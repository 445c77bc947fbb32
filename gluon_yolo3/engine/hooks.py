"""Training hooks: the trainer calls them before training, after every step and epoch, and after training."""
from __future__ import annotations


class HookBase:
    """Base of every hook; `trainer` is set when the hook is registered with a trainer."""

    trainer = None

    def before_train(self):
        pass

    def after_step(self):
        pass

    def after_epoch(self):
        pass

    def after_train(self):
        pass
