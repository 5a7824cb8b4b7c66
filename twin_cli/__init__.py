"""The ``twin`` command line: the application layer that composes the core (``twin``) with its
adapters (``cluster``, ``optimizer``, ``server``). The core never imports this package."""
