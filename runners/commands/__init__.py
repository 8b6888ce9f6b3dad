"""One module per `membench` subcommand (HELP, add_arguments, run)."""
