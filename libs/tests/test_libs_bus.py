"""Connecting to the bus."""

from __future__ import annotations

from aqueduct_libs.bus import inbox_prefix_of, servers_of


def test_the_inbox_prefix_follows_the_nats_user() -> None:
    assert inbox_prefix_of("nats://proxy:s3cret@127.0.0.1:4222") == "_INBOX_proxy"
    assert inbox_prefix_of("nats://batch-worker:p%40ss@nats:4222,nats://other:4222") == "_INBOX_batch-worker"
    assert inbox_prefix_of("nats://just-a-token@127.0.0.1:4222") == "_INBOX"
    assert inbox_prefix_of("nats://127.0.0.1:4222") == "_INBOX"


def test_a_cluster_address_names_every_node_without_credentials() -> None:
    assert servers_of("nats://proxy:s3cret@n1:4222, nats://n2:4222,n3:4222") == [
        "nats://n1:4222",
        "nats://n2:4222",
        "nats://n3:4222",
    ]
    # The credentials of whichever address carries them name the user of the whole list.
    assert inbox_prefix_of("nats://n1:4222,nats://proxy:s3cret@n2:4222") == "_INBOX_proxy"
