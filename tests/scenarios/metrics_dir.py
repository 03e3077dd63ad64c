"""Where the metrics directory is made: prints its path, then removes it.

argv: none (TMPDIR decides).
"""

from tornado_prefork._metrics.directory import MetricsDirectory

directory = MetricsDirectory()
print(directory.path)
directory.remove()
