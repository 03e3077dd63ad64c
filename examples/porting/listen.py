import tornado.web

import tornado_prefork


class MainHandler(tornado.web.RequestHandler):
    def get(self):
        self.write("Hello, world")


def make_app():
    return tornado.web.Application([(r"/", MainHandler)])


if __name__ == "__main__":
    tornado_prefork.serve(make_app, port=8000)
