"""pika's confirm and return callbacks fed into the shared bookkeeping (broker/confirms.py).

pika reports confirms inside its I/O loop, where nothing may publish: they are only recorded
there, and the callbacks run from the connection's next poll (pika's call_later(0, fn)).
"""

from __future__ import annotations

from typing import Any

import pika

from droplet.broker.confirms import PublisherConfirms

__all__ = ["PikaConfirms", "PublisherConfirms"]


class PikaConfirms(PublisherConfirms):
    def on_return(self, _ch: Any, _method: Any, props: pika.BasicProperties, _body: bytes
                  ) -> None:
        self.returned(props.message_id)

    def on_confirm(self, frame: Any) -> None:
        method = frame.method
        self.confirmed(int(method.delivery_tag), bool(method.multiple),
                       isinstance(method, pika.spec.Basic.Ack))
