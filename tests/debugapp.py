"""An application object built at import with ``debug=True``, which starts
Tornado's autoreload and with it an event loop (IOLoop.current())."""

from tornado.web import Application

app = Application([], debug=True)
