"""Entry point of the desktop bundle: starts the Weightsmith studio (``app.__main__.main``)."""

import multiprocessing
import sys

from app.__main__ import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # a frozen program must handle multiprocessing's child start itself
    sys.exit(main())
