#!/usr/bin/python3
"""Sends messages our own client never would, to prove a peer cannot hurt the bus.

  odd_peer.py encode KIND                      print the encoded message as hex.
  odd_peer.py send HOST:PORT ADDRESS KIND...   connect, send one message per KIND to
                                               ADDRESS, print each outcome, exit.
  odd_peer.py serve PORT KIND...               listen on 127.0.0.1:PORT as a minimal AMQP
                                               peer; to every receiver link that attaches,
                                               send one message per KIND; print outcomes.

KIND: list-property (an application property whose value is a list: legal AMQP encoding,
not a valid property), big-list (a list body over 1 MiB), big-map (a map body over 1 MiB),
good-N (the string body "good-N"). Prints "KIND accepted|rejected|released"."""
import sys

from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container


def make(kind):
    if kind == "list-property":
        return Message(body="odd", properties={"coalesce-key": ["a", "b"], "k": [1, 2]})
    if kind == "big-list":
        return Message(body=["x" * 1024] * 1100)
    if kind == "big-map":
        return Message(body={"k%d" % i: "x" * 1024 for i in range(1100)})
    if kind.startswith("good-"):
        return Message(body=kind)
    raise SystemExit("unknown kind " + kind)


class Sender(MessagingHandler):
    def __init__(self, kinds):
        super().__init__(auto_accept=False)
        self.kinds = list(kinds)
        self.sent = {}
        self.settled = 0

    def send_all(self, sender):
        while self.kinds and sender.credit > 0:
            kind = self.kinds.pop(0)
            self.sent[sender.send(make(kind))] = kind

    def report(self, event, outcome):
        print(self.sent[event.delivery], outcome, flush=True)
        self.settled += 1
        if self.settled == self.total:
            self.done(event)

    def on_accepted(self, event):
        self.report(event, "accepted")

    def on_rejected(self, event):
        self.report(event, "rejected")

    def on_released(self, event):
        self.report(event, "released")


class Client(Sender):
    def __init__(self, hostport, address, kinds):
        super().__init__(kinds)
        self.total = len(kinds)
        self.hostport = hostport
        self.address = address

    def on_start(self, event):
        self.conn = event.container.connect(self.hostport)
        event.container.create_sender(self.conn, self.address)

    def on_sendable(self, event):
        self.send_all(event.sender)

    def done(self, event):
        self.conn.close()


class Server(Sender):
    def __init__(self, port, kinds):
        super().__init__(kinds)
        self.total = len(kinds)
        self.port = port
        self.template = list(kinds)

    def on_start(self, event):
        self.acceptor = event.container.listen("127.0.0.1:%s" % self.port)
        print("listening", flush=True)

    def on_link_opening(self, event):
        # A receiver on the other side: our end is a sender; echo the addresses it wants.
        if event.link.is_sender:
            addr = event.link.remote_source.address
            if event.link.remote_source.dynamic:
                addr = "reply.1"
            event.link.source.address = addr
            event.link.target.address = event.link.remote_target.address
        else:
            event.link.target.address = event.link.remote_target.address

    def on_sendable(self, event):
        if event.sender.source.address == "pcloud.odd":
            self.send_all(event.sender)

    def done(self, event):
        # Leave the connection open: the test checks the client keeps working, then
        # kills us.
        pass


if sys.argv[1] == "encode":
    # The encoded message as hex, for unit tests of the decoding helpers.
    print(make(sys.argv[2]).encode().hex())
elif sys.argv[1] == "send":
    Container(Client(sys.argv[2], sys.argv[3], sys.argv[4:])).run()
else:
    Container(Server(sys.argv[2], sys.argv[3:])).run()
