#!/usr/bin/env python3
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

import asyncio
import tornado
import os.path

import tornado_prefork
from tornado_prefork import broadcast
from tornado.options import define, options, parse_command_line

define("port", default=8888, help="run on the given port", type=int)
define("debug", default=True, help="run in debug mode")
define("processes", default=4, help="worker processes", type=int)


# The messages are the broadcast topic "chat": each worker's handlers see all
# of them, and a message's position is its id, a cursor valid on any worker.
def as_message(handler, event):
    message = {"id": str(event.position), "body": event.data["body"]}
    # render_string() returns a byte string, which is not supported
    # in json, so we must convert it to a character string.
    message["html"] = tornado.escape.to_unicode(
        handler.render_string("message.html", message=message)
    )
    return message


class MainHandler(tornado.web.RequestHandler):
    async def get(self):
        messages = [as_message(self, m) for m in await broadcast.recent("chat", 200)]
        self.render("index.html", messages=messages)


class MessageNewHandler(tornado.web.RequestHandler):
    """Post a new message to the chat room."""

    async def post(self):
        body = self.get_argument("body")
        position = await broadcast.publish("chat", {"body": body})
        message = as_message(self, broadcast.Message("chat", {"body": body}, position))
        if next := self.get_argument("next", None):
            if next.startswith("//") or not next.startswith("/"):
                # Absolute URLs are not allowed because this would be an open redirect
                # vulnerability (https://cwe.mitre.org/data/definitions/601.html).
                raise tornado.web.HTTPError(400)
            self.redirect(next)
        else:
            self.write(message)


class MessageUpdatesHandler(tornado.web.RequestHandler):
    """Long-polling request for new messages.

    Waits until new messages are available before returning anything.
    """

    async def post(self):
        cursor = self.get_argument("cursor", None)
        since = broadcast.Position.parse(cursor) if cursor else None
        async with broadcast.subscribe("chat", since=since) as subscription:
            # Save the Future returned here so we can cancel it in
            # on_connection_close.
            self.wait_future = asyncio.ensure_future(subscription.read())
            try:
                events = await self.wait_future
            except asyncio.CancelledError:
                return
        messages = [as_message(self, e) for e in events if isinstance(e, broadcast.Message)]
        if self.request.connection.stream.closed():
            return
        self.write(dict(messages=messages))

    def on_connection_close(self):
        self.wait_future.cancel()


def make_app():
    return tornado.web.Application(
        [
            (r"/", MainHandler),
            (r"/a/message/new", MessageNewHandler),
            (r"/a/message/updates", MessageUpdatesHandler),
        ],
        cookie_secret="__TODO:_GENERATE_YOUR_OWN_RANDOM_VALUE_HERE__",
        template_path=os.path.join(os.path.dirname(__file__), "templates"),
        static_path=os.path.join(os.path.dirname(__file__), "static"),
        xsrf_cookies=True,
        debug=options.debug,
    )


if __name__ == "__main__":
    parse_command_line()
    tornado_prefork.serve(make_app, port=options.port, processes=options.processes)
