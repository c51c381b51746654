from metalearn.cli import main

raise SystemExit(main())
