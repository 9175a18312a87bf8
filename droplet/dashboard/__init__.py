"""`droplet dashboard`: a web view of a fleet, read from etcd and the broker.

The pages are rendered on the server from the latest sample (`sampler.py`), which a background
thread takes every couple of seconds; a page never waits on etcd or RabbitMQ, so a slow or
absent service shows as down instead of hanging the browser, and the dashboard adds nothing to
the path of a call. Modules: `sampler` (what is read, and when), `history` (rates and
time series from successive samples), `svg` (DAG graphs and charts), `dead_letters` (list,
requeue, purge), `guard` (the token and confirmations of actions), `app` (routes and pages).
"""
