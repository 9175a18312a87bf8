# Usage: .venv/bin/python scripts/transport_reqrep_calls.py amqp|pika [N]
# (against the RabbitMQ on 127.0.0.1:5672)
"""2000 request/replies: a client connection (no confirms) publishes a request with reply_to,
a worker connection (confirms) polls it, answers and acks in one written_together; the client
polls the reply. Counts Python calls (cProfile) and CPU time per request/reply."""
import cProfile
import pstats
import sys
import time
import uuid

from droplet.broker.interface import QueueSpec, Topology
from droplet.runtime import broker_transport
from droplet.settings import Settings

transport = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
s = Settings(broker_transport=transport)
cls = broker_transport(s)
worker = cls(s, "prof-worker", True)
client = cls(s, "prof-client", False)
q = f"prof-{uuid.uuid4().hex[:8]}"
worker.declare(Topology(queues=[QueueSpec(q, durable=False, auto_delete=True)]))
worker.consume(q, prefetch=64)
address = client.consume_replies()
body = b"r" * 200

def one(i):
    client.publish(q, body, reply_to=address, correlation_id=str(i), persistent=False,
                   headers={"k": "v"})
    got = []
    while not got:
        got = worker.poll(1.0)
    for d in got:
        with worker.written_together():
            worker.publish(d.reply_to, b"answer", correlation_id=d.correlation_id,
                           persistent=False)
            worker.ack(d.tag)
    replies = []
    while not replies:
        replies = client.poll(1.0)

for i in range(200):  # warm-up
    one(i)
prof = cProfile.Profile()
cpu0 = time.process_time()
prof.enable()
for i in range(n):
    one(i)
prof.disable()
cpu = time.process_time() - cpu0
st = pstats.Stats(prof)
print(f"{transport}: {st.total_calls / n:.1f} Python calls per request/reply (cProfile, all"
      f" code incl. this script), primitive {st.prim_calls / n:.1f}")
cpu0 = time.process_time()
t0 = time.perf_counter()
for i in range(n):
    one(i)
print(f"{transport}: {1e6 * (time.process_time() - cpu0) / n:.0f} us CPU per request/reply"
      f" (unprofiled), wall {1e6 * (time.perf_counter() - t0) / n:.0f} us")
if len(sys.argv) > 3:
    st.sort_stats("ncalls").print_stats(25)
worker.delete_queue(q)
worker.close()
client.close()
