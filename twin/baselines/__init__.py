"""Baselines from outside the project, each behind an optional import.

* :mod:`twin.baselines.psytrack`: PsyTrack (Roy et al., Neuron 2021), random-walk weights with
  no learning rule; needs the ``psytrack`` package (``pip install psytrack==2.0.2``).
"""
