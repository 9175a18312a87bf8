"""The wire schema: `pb` is the generated module (droplet/proto/gen, made by `make proto`)."""

from droplet.proto.gen import droplet_pb2 as pb

__all__ = ["pb"]
