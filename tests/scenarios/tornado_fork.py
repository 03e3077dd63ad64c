"""task_id() in the children of Tornado's own fork_processes.

argv: none. Each child prints ``<Tornado's task id> <tornado_prefork.task_id()>``.
"""

import tornado.process

import tornado_prefork
from tests.scenarios import say

i = tornado.process.fork_processes(2)
say(i, tornado_prefork.task_id())
