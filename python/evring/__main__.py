"""python3 -m evring ...: the evring CLI's subcommands (ls, attach, record, replay, top, ...).

Runs the `evring` program with the arguments, in place of this process
(exec), so its output, exit status and signals are the CLI's own. The
program is $EVRING_CLI when set; else the build tree's, for the build
tree's package; else PREFIX/bin/evring beside an installed package
(PREFIX/lib/pythonX.Y/dist-packages/evring); else `evring` on PATH.
"""

import os
import shutil
import sys


def find_cli():
    env = os.environ.get("EVRING_CLI")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        from . import _paths  # written by the build, for the build tree's package only
        if os.path.realpath(_paths.PKG) == os.path.realpath(here) and os.access(_paths.CLI, os.X_OK):
            return _paths.CLI
    except ImportError:
        pass
    prefix = here
    for _ in range(4):  # evring, dist-packages, pythonX.Y, lib
        prefix = os.path.dirname(prefix)
    installed = os.path.join(prefix, "bin", "evring")
    if os.access(installed, os.X_OK):
        return installed
    return shutil.which("evring")


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    cli = find_cli()
    if not cli:
        sys.stderr.write("python3 -m evring: the evring program was not found: not in the build tree, not beside "
                         "the installed package, not on PATH (set EVRING_CLI to its path)\n")
        return 127
    try:
        os.execv(cli, [cli] + list(args))
    except OSError as e:
        sys.stderr.write("python3 -m evring: cannot run %s: %s\n" % (cli, e.strerror))
        return 126


if __name__ == "__main__":
    sys.exit(main())
