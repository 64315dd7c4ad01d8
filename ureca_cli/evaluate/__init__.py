"""Evaluation: the caption metrics and uniqueness (``score``), the caption formats it reads (``readers``),
and the validation pass that ends training (``validate``)."""
