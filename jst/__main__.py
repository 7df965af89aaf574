from jst.cli import main

raise SystemExit(main())
