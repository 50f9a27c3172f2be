"""What the Snakefile imports: configuration, sessions sheet, paths, container commands."""
