"""`pstar-agent`: a pilot's agent as a process of its own (started by pstar, with Redis)."""

import sys

from . import _pstar


def main():
    try:
        code = _pstar.run_agent(sys.argv[1:])
    except _pstar.Error as e:
        print(e, file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
