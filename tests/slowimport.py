"""A module that takes 10 s to import, as one that loads a large model does
(imported only by workers, with preload=False)."""

import os
import time

from tests.scenarios import say
from tests.webapp import make_app

say("importing", os.getpid())
time.sleep(10)

__all__ = ["make_app"]
