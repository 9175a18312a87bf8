"""Text from the fleet made safe to print on an operator's terminal.

What `droplet status` and `droplet dead-letters` print comes from etcd records and from
whoever published a message (a dead letter's headers and body need no signing key). Printed
raw, control characters in it (escape sequences, BEL, C1 controls, bidirectional overrides)
act on the terminal: they clear it, retitle it, or write over the lines listed. Each one is
shown as its Python escape instead (`\\x1b`), so it stays visible and does nothing.
"""

from __future__ import annotations


def shown(line: str) -> str:
    """line with every character str.isprintable() refuses written as its escape."""
    if line.isprintable():
        return line
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in line)
