"""``python -m SAMSegmenterLib``: interrupts are handled from the first line (exit 130, no traceback)."""

import sys

try:
    from .cli import interrupts

    interrupts.install()
    from .cli import main
except KeyboardInterrupt as exc:
    sys.stderr.write("interrupted\n")
    sys.exit(interrupts.exit_code(exc) if "interrupts" in globals() else 130)

code = main()
interrupts.finishing()  # the command has returned: an interrupt now changes nothing
sys.exit(code)
