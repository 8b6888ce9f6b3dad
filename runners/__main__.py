import sys

from membench.runners.cli import main

sys.exit(main())
