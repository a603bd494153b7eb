import sys

from vallex.cli import main

sys.exit(main())
