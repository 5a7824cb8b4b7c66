"""Ray adapters: cohort twin fitting (and, later, batch curriculum search) on a Ray cluster.

The core (:mod:`twin`) never imports Ray; this package maps its batched units of work onto Ray
tasks. Local Ray by default (loopback only), a cluster by address.
"""
