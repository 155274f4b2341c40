"""Messaging: the broker topology, the transactional outbox and its relay, and idempotent consumers."""
