"""Example plugin: a focal-loss objectness term, registered from a plain file.

Use it from a recipe:

    plugins: [../plugins/focal_objectness.py]      # relative to the recipe file
    loss:
      terms:
        - {type: focal_objectness, weight: 1.0, gamma: 2.0, alpha: 0.25}

A plugin is any Python file or module that registers components; copy this one to start your own.
The term follows the loss-term contract of `gluon_yolo3.losses.terms` (inputs and the (B,) output).
"""
from gluon_yolo3.losses.terms import LossTerm, bce_with_logits, field, per_image_sum
from gluon_yolo3.registry import LOSSES


@LOSSES.register("focal_objectness")
class FocalObjectness(LossTerm):
    """Objectness with focal loss (Lin et al. 2017): easy background predictions weigh almost nothing."""

    short_name = "obj"

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25, **kwargs):
        super().__init__(**kwargs)
        self.gamma = float(gamma)
        self.alpha = float(alpha)

    def hybrid_forward(self, F, pred, target, pred_boxes, noobj):
        obj = field(F, target, 0, 1)                       # (B, T, 1) 1 on assigned anchors
        logits = field(F, pred, 4, 5)
        p = F.sigmoid(logits)
        positive = obj * self.alpha * (1 - p) ** self.gamma * bce_with_logits(F, logits, F.ones_like(logits))
        negative = noobj * (1 - self.alpha) * p ** self.gamma * bce_with_logits(F, logits, F.zeros_like(logits))
        return per_image_sum(F, positive + negative)
