"""The browser test of the built book runs only when asked for (``make test`` and ``make
browser-test`` set MARKOVFORMER_BROWSER_TEST=1): the unit tests (``pytest tests``) need no built
book and no browser. When asked for, a missing build or a missing Chromium fails the test."""

import os

if os.environ.get("MARKOVFORMER_BROWSER_TEST") != "1":
    collect_ignore_glob = ["test_*.py"]
