"""One module per ``hfgd-lab`` subcommand: ``add_arguments(parser)`` and ``run(args)``."""
