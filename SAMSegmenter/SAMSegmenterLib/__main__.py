"""``python -m SAMSegmenterLib``: interrupts are handled from the first line (exit 130, no traceback)."""

import signal
import sys

try:
    from .cli import interrupts

    interrupts.install()
    from .cli import main
except KeyboardInterrupt as exc:
    sys.stderr.write("interrupted\n")
    sys.exit(interrupts.exit_code(exc) if "interrupts" in globals() else 130)

code = main()
# The command has returned (its outputs in place): an interrupt now changes nothing. Ignored by the system rather
# than by a Python handler, which the interpreter's shutdown would reset to the default (exit 130 after success).
for signum in interrupts.SIGNALS:
    signal.signal(signum, signal.SIG_IGN)
sys.exit(code)
