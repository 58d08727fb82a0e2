from blade.cli import main

raise SystemExit(main())
