import sys

try:
    from membench.runners.cli import main
except KeyboardInterrupt:  # Ctrl-C while the first modules import
    sys.stderr.write("membench: interrupted\n")
    sys.exit(130)

sys.exit(main())
