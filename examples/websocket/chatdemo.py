#!/usr/bin/env python
#
# Copyright 2009 Facebook
#
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.
"""Simplified chat demo for websockets.

Authentication, error handling, etc are left as an exercise for the reader :)
"""

import logging
import tornado
import os.path
import uuid

import tornado_prefork
from tornado_prefork import broadcast
from tornado.options import define, options

define("port", default=8888, help="run on the given port", type=int)
define("processes", default=4, help="worker processes", type=int)


class Application(tornado.web.Application):
    def __init__(self):
        handlers = [(r"/", MainHandler), (r"/chatsocket", ChatSocketHandler)]
        settings = dict(
            cookie_secret="__TODO:_GENERATE_YOUR_OWN_RANDOM_VALUE_HERE__",
            template_path=os.path.join(os.path.dirname(__file__), "templates"),
            static_path=os.path.join(os.path.dirname(__file__), "static"),
            xsrf_cookies=True,
        )
        super().__init__(handlers, **settings)


class MainHandler(tornado.web.RequestHandler):
    async def get(self):
        messages = [m.data for m in await broadcast.recent("chat", 200)]
        self.render("index.html", messages=messages)


# The messages are the broadcast topic "chat", which every worker's sockets
# receive; a client that reconnects with ?cursor= resumes after that message.
class ChatSocketHandler(broadcast.BroadcastWebSocket):
    def get_compression_options(self):
        # Non-None enables compression with default options.
        return {}

    def open(self):
        cursor = self.get_argument("cursor", None)
        since = broadcast.Position.parse(cursor) if cursor else None
        self.broadcast_subscribe("chat", since=since)

    def on_broadcast(self, event):
        if isinstance(event, broadcast.Message):
            return self.write_message(dict(event.data, cursor=str(event.position)))

    async def on_message(self, message):
        logging.info("got message %r", message)
        parsed = tornado.escape.json_decode(message)
        chat = {"id": str(uuid.uuid4()), "body": parsed["body"]}
        chat["html"] = tornado.escape.to_basestring(
            self.render_string("message.html", message=chat)
        )

        await broadcast.publish("chat", chat)


if __name__ == "__main__":
    tornado.options.parse_command_line()
    tornado_prefork.serve(Application, port=options.port, processes=options.processes)
