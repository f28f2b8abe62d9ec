"""Stage runners: file orchestration around the pure algorithms (read inputs, per-item resume,
atomic outputs, provenance). The CLI subcommands in ``trace_edges.commands`` only parse
arguments and call these."""
