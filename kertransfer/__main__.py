"""``python -m kertransfer`` runs the command line."""

from kertransfer.cli.main import main

raise SystemExit(main())
