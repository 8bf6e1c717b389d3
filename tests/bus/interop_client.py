#!/usr/bin/python3
"""A python3-qpid-proton client for the hub interop test: receives one message on
pcloud.agent.py, sends a report to pcloud.reports.py, and makes one request to pcloud.cped
through a dynamic reply address. Prints what it saw; exits non-zero on any failure."""
import json
import sys

from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container, DynamicNodeProperties  # noqa: F401


class Interop(MessagingHandler):
    def __init__(self, hostport):
        super().__init__()
        self.hostport = hostport
        self.got_agent = False
        self.got_reply = False
        self.reply_to = None
        self.request_sent = False

    def on_start(self, event):
        conn = event.container.connect(self.hostport)
        self.conn = conn
        self.agent_rx = event.container.create_receiver(conn, "pcloud.agent.py")
        self.reply_rx = event.container.create_receiver(conn, None, dynamic=True)
        self.report_tx = event.container.create_sender(conn, "pcloud.reports.py")
        self.cped_tx = event.container.create_sender(conn, "pcloud.cped")
        self.report_sent = False

    def on_link_opened(self, event):
        if event.receiver == self.reply_rx:
            self.reply_to = event.receiver.remote_source.address
            self.maybe_request()

    def on_sendable(self, event):
        if event.sender == self.report_tx and not self.report_sent:
            msg = Message(body='{"v":1,"type":"hello","assembly":"py"}',
                          properties={"coalesce-key": "hb.py"})
            self.report_tx.send(msg)
            self.report_sent = True
        self.maybe_request()

    def maybe_request(self):
        if self.request_sent or not self.reply_to or self.cped_tx.credit <= 0:
            return
        self.cped_tx.send(Message(body=json.dumps({"v": 1, "type": "status", "id": "py-1"}),
                                  reply_to=self.reply_to, correlation_id="py-1"))
        self.request_sent = True

    def on_message(self, event):
        if event.receiver == self.agent_rx:
            print("agent-got", event.message.body, flush=True)
            self.got_agent = True
        elif event.receiver == self.reply_rx:
            body = json.loads(event.message.body)
            if body.get("ok") and event.message.correlation_id == "py-1":
                print("reply-ok", body["id"], flush=True)
                self.got_reply = True
        if self.got_agent and self.got_reply and self.report_sent:
            self.conn.close()

    def on_transport_error(self, event):
        print("transport-error", event.transport.condition, flush=True)
        sys.exit(2)


h = Interop(sys.argv[1])
Container(h).run()
sys.exit(0 if h.got_agent and h.got_reply else 1)
