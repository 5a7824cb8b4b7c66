"""Adapters between the core's types and other labs' data libraries, each behind an optional
extra: :mod:`twin_interop.aind` (curricula as ``aind-behavior-curriculum`` objects, the ``aind``
extra).

Importing this package needs nothing optional; importing one of its adapter modules without its
extra raises :class:`twin.data.alf.OptionalDependencyError` saying what to install. The core
never imports this package.
"""
