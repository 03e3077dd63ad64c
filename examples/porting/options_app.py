import tornado.web
from tornado.options import define, options

import tornado_prefork
from tornado_prefork import options as prefork_options

define("greeting", default="Hello")


class MainHandler(tornado.web.RequestHandler):
    def get(self):
        self.write(options.greeting)


def make_app():
    return tornado.web.Application([(r"/", MainHandler)])


if __name__ == "__main__":
    prefork_options.define_options()
    prefork_options.parse_command_line()
    tornado_prefork.serve(make_app, **prefork_options.serve_kwargs())
