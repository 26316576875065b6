"""Subcommands of the `jaxvi` command line; see `jaxvi.cli`."""
