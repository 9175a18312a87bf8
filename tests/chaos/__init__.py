"""A Jepsen-style history checker for Droplet: a workload and a nemesis record a history of
operations and faults through the public client API; the checker proves what went wrong."""
