"""One module per subcommand; `longrope.cli` discovers them. Each defines `register(subparsers)`."""
