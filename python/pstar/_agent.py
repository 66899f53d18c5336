"""`pstar-agent`: a pilot's agent as a process of its own (started by pstar, with Redis)."""

import sys

from . import _pstar


def main():
    sys.exit(_pstar.run_agent(sys.argv[1:]))


if __name__ == "__main__":
    main()
