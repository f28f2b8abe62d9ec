from trace_edges.cli import main

raise SystemExit(main())
