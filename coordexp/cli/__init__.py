"""Command line: ``python -m coordexp {train,check-logs,report}`` (see ``coordexp.cli.main``)."""
