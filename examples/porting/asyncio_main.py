import asyncio

import tornado.web

import tornado_prefork


class MainHandler(tornado.web.RequestHandler):
    def get(self):
        self.write({"ready": self.settings["ready"]})


async def make_app():
    ready = await asyncio.sleep(0, result=True)  # an async set-up: a pool, a client
    return tornado.web.Application([(r"/", MainHandler)], ready=ready)


if __name__ == "__main__":
    tornado_prefork.serve(make_app, port=8000)
