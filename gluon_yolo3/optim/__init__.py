"""Optimizers and learning-rate schedules, registered so that recipes can name them."""
