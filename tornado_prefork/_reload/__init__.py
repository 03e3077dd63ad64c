"""Reloading: the re-exec in place of serve()'s parent (`inplace`), the
check of new code in a child before it (`check`), the old workers kept
when new code fails after it (`keeper`), and the ``--reload`` file watcher
(`watcher`). Knows nothing of HTTP."""
