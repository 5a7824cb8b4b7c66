"""The ``twin`` subcommands, one module per group; each module registers its subparsers
(``add_<command>(sub)``) and holds their ``cmd_*`` functions. :mod:`twin_cli.cli` puts them together."""
