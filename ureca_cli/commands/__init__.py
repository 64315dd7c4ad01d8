"""One module per subcommand: options parsed into a stage config, streams opened, the stage called."""
