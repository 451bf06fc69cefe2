"""How both command-line tools (``flclient`` and ``featurec``) run one command and end it: an exit code, one
``prog: error: ...`` line for an expected error, and no traceback when the reader of stdout goes away."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["run_command"]


def run_command(prog: str, args: argparse.Namespace, errors: tuple[type[BaseException], ...]) -> int:
    """Run ``args.func(args)``; ``errors`` are the exceptions reported as one line with exit status 1."""
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, so that a closed pipe is answered below and not at interpreter exit
        return code
    except BrokenPipeError:
        # the reader went away (`prog ... | head`): no traceback; silence the flush at exit too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by a closed pipe
    except errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
