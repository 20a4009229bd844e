"""Who may do what on the bus: one NATS user per service, each with publish and subscribe allow-lists.

NATS is the trust root: the auth snapshot says which API tokens are valid, the ``auth_keys`` bucket which
sessions are, and whoever answers ``directory.rpc.v1.sign_in`` decides who a signed-in user is. So each
service may publish only the subjects its own code writes, and read only the streams and buckets it
watches: a compromised proxy or UI process can neither mint tokens, forge sessions nor answer a sign-in.

On top of the allow-lists every user gets an explicit deny-list of the subjects it must never touch, so a
future, too-broad allow entry cannot silently open them again.

The embedded server (``aqueduct up``) and ``infra/nats/nats.conf`` (docker-compose) are written from this
one table; ``python -m aqueduct_cli.nats_users`` prints the compose file, a test keeps the two equal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aqueduct_libs import names

__all__ = [
    "GRANTS",
    "SERVICE_USERS",
    "Grant",
    "authorization_block",
    "compose_config",
    "embedded_authorization",
    "password_env",
]


def _kv(bucket: str) -> str:
    """The stream behind a KV bucket."""
    return f"KV_{bucket}"


def _obj(store: str) -> str:
    """The stream behind an object store."""
    return f"OBJ_{store}"


# The streams ``aqueduct_libs.bus.ensure_topology`` creates (every service checks them on start).
TOPOLOGY_STREAMS: tuple[str, ...] = (
    names.DIRECTORY_EVENTS_STREAM,
    names.USAGE_STREAM,
    names.AUTH_EVENTS_STREAM,
    names.DEAD_LETTERS_STREAM,
    *(
        _kv(b)
        for b in (
            names.AUTH_SNAPSHOT_BUCKET,
            names.QUOTA_BUCKET,
            names.AUTH_KEYS_BUCKET,
            names.AUTH_REVOKED_BUCKET,
            names.AUTH_ATTEMPTS_BUCKET,
        )
    ),
)
# The proxy's and the batch worker's own storage (files and batches APIs), created by whichever starts first.
BATCH_STREAMS: tuple[str, ...] = (
    _obj(names.FILES_OBJECT_STORE),
    _kv(names.FILES_META_BUCKET),
    _kv(names.BATCHES_BUCKET),
    _kv(names.BATCH_RESULTS_BUCKET),
    names.BATCH_LINES_STREAM,
)

# Subjects whose writers are the trust root: (subject, the one service allowed to publish it).
PROTECTED_PUBLISH: tuple[tuple[str, str], ...] = (
    (f"$KV.{names.AUTH_SNAPSHOT_BUCKET}.>", "directory"),
    (f"{names.SNAPSHOT_PUSH_PREFIX}.>", "directory"),
    (f"{names.DIRECTORY_EVENTS_SUBJECT_PREFIX}.>", "directory"),
    (f"$KV.{names.AUTH_KEYS_BUCKET}.>", "auth"),
    (f"$KV.{names.AUTH_REVOKED_BUCKET}.>", "auth"),
    (f"$KV.{names.AUTH_ATTEMPTS_BUCKET}.>", "auth"),
    (f"{names.AUTH_EVENTS_SUBJECT_PREFIX}.>", "auth"),
    (f"$KV.{names.QUOTA_BUCKET}.>", "accounting"),
    (f"{names.DEAD_LETTERS_SUBJECT_PREFIX}.>", "accounting"),
)
# Administrative JetStream calls nobody needs at run time: deleting or restoring a stream, deleting
# single messages, and the server-wide meta calls. Changing a stream is denied too, but to its owner (the
# replicas of AQUEDUCT_NATS_REPLICAS, see ``Grant.updates``).
STREAM_UPDATE = "$JS.API.STREAM.UPDATE"
FORBIDDEN_PUBLISH: tuple[str, ...] = (
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.STREAM.RESTORE.>",
    "$JS.API.STREAM.SNAPSHOT.>",
    "$JS.API.ACCOUNT.>",
    "$JS.API.META.>",
    "$JS.API.SERVER.>",
)
DIRECTORY_RPC = "directory.rpc.v1.>"


@dataclass(frozen=True)
class Grant:
    """What one service does on the bus."""

    reads: tuple[str, ...] = ()  # streams (and KV/object stores) it reads, watches or consumes
    publishes: tuple[str, ...] = ()  # plain and JetStream subjects, KV and object store subjects
    creates: tuple[str, ...] = ()  # streams it may create if missing (never delete)
    # Streams it owns and may update: it brings them to the configured replicas (AQUEDUCT_NATS_REPLICAS).
    updates: tuple[str, ...] = ()
    purges: tuple[str, ...] = ()  # streams it may purge (its own work queue, its own object store)
    serves: tuple[str, ...] = ()  # request/reply subjects it answers
    follows: tuple[str, ...] = ()  # plain subjects it subscribes to
    requests: tuple[str, ...] = field(default=())  # request/reply subjects it calls

    def publish_allow(self) -> list[str]:
        allow = [
            # Everyone checks the topology on start (stream info) and may look streams up by subject.
            "$JS.API.INFO",
            "$JS.API.STREAM.INFO.*",
            "$JS.API.STREAM.NAMES",
        ]
        for stream in self.reads:
            allow += [
                f"$JS.API.STREAM.MSG.GET.{stream}",
                f"$JS.API.DIRECT.GET.{stream}",
                f"$JS.API.DIRECT.GET.{stream}.>",
                f"$JS.API.CONSUMER.*.{stream}",  # CREATE (ephemeral), LIST, NAMES
                f"$JS.API.CONSUMER.*.{stream}.>",  # CREATE with a name, INFO, DELETE of its consumers
                f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",  # pull requests
                f"$JS.ACK.{stream}.>",
                f"$JS.FC.{stream}.>",  # flow control of watches (ordered consumers)
            ]
        allow += [f"$JS.API.STREAM.CREATE.{stream}" for stream in self.creates]
        allow += [f"$JS.API.STREAM.PURGE.{stream}" for stream in self.purges]
        allow += [f"{STREAM_UPDATE}.{stream}" for stream in self.updates]
        return [*allow, *self.publishes, *self.requests]

    def publish_deny(self, service: str) -> list[str]:
        deny = [subject for subject, owner in PROTECTED_PUBLISH if owner != service]
        if not self.requests:  # a sign-in request provisions users: only auth may send one
            deny.append(DIRECTORY_RPC)
        if self.updates:  # every known stream but its own (a deny would win over the allow)
            deny += [
                f"{STREAM_UPDATE}.{s}" for s in (*TOPOLOGY_STREAMS, *BATCH_STREAMS) if s not in self.updates
            ]
        else:
            deny.append(f"{STREAM_UPDATE}.>")
        return [*deny, *FORBIDDEN_PUBLISH]

    def subscribe_allow(self, service: str) -> list[str]:
        # Its own inbox prefix only (aqueduct_libs.bus.connect sets it from the user name): replies to
        # other services' requests, JetStream answers included, are not its to read.
        return [f"{names.inbox_prefix(service)}.>", *self.serves, *self.follows]

    def subscribe_deny(self) -> list[str]:
        return [] if self.serves else [DIRECTORY_RPC]


_EVERYONE_READS = (_kv(names.AUTH_KEYS_BUCKET), _kv(names.AUTH_REVOKED_BUCKET))
_BATCH = Grant(
    reads=(
        *_EVERYONE_READS,
        _kv(names.AUTH_SNAPSHOT_BUCKET),
        _kv(names.QUOTA_BUCKET),
        *BATCH_STREAMS,
    ),
    publishes=(
        "usage.v1.>",
        f"{names.BATCH_LINES_SUBJECT_PREFIX}.>",
        f"$KV.{names.FILES_META_BUCKET}.>",
        f"$KV.{names.BATCHES_BUCKET}.>",
        f"$KV.{names.BATCH_RESULTS_BUCKET}.>",
        f"$O.{names.FILES_OBJECT_STORE}.>",
    ),
    creates=(names.USAGE_STREAM, *BATCH_STREAMS),
    updates=BATCH_STREAMS,
    purges=(names.BATCH_LINES_STREAM, _obj(names.FILES_OBJECT_STORE)),
    follows=(f"{names.SNAPSHOT_PUSH_PREFIX}.>",),  # the auth snapshot's changes (aqueduct_libs.snapshot_push)
)

GRANTS: dict[str, Grant] = {
    # Owns the topology (creates every shared stream), the auth snapshot, its integration events and the
    # sign-in RPC.
    "directory": Grant(
        reads=(*_EVERYONE_READS, _kv(names.AUTH_SNAPSHOT_BUCKET)),
        publishes=(
            f"$KV.{names.AUTH_SNAPSHOT_BUCKET}.>",
            f"{names.SNAPSHOT_PUSH_PREFIX}.>",
            f"{names.DIRECTORY_EVENTS_SUBJECT_PREFIX}.>",
        ),
        creates=TOPOLOGY_STREAMS,
        updates=TOPOLOGY_STREAMS,
        serves=(DIRECTORY_RPC,),
    ),
    # Signing keys, ended sessions, sign-in attempts and its events; asks the directory who signed in, and
    # reads its users' current roles from the auth snapshot.
    "auth": Grant(
        reads=(*_EVERYONE_READS, _kv(names.AUTH_ATTEMPTS_BUCKET), _kv(names.AUTH_SNAPSHOT_BUCKET)),
        publishes=(
            f"$KV.{names.AUTH_KEYS_BUCKET}.>",
            f"$KV.{names.AUTH_REVOKED_BUCKET}.>",
            f"$KV.{names.AUTH_ATTEMPTS_BUCKET}.>",
            f"{names.AUTH_EVENTS_SUBJECT_PREFIX}.>",
        ),
        creates=(
            names.AUTH_EVENTS_STREAM,
            _kv(names.AUTH_KEYS_BUCKET),
            _kv(names.AUTH_REVOKED_BUCKET),
            _kv(names.AUTH_ATTEMPTS_BUCKET),
        ),
        requests=(names.DIRECTORY_RPC_SIGN_IN,),
    ),
    # Consumes usage and directory events, writes budget decisions; writes, reads and (once re-driven)
    # purges the dead letters of its consumers.
    "accounting": Grant(
        reads=(
            *_EVERYONE_READS,
            _kv(names.AUTH_SNAPSHOT_BUCKET),
            _kv(names.QUOTA_BUCKET),
            names.USAGE_STREAM,
            names.DIRECTORY_EVENTS_STREAM,
            names.DEAD_LETTERS_STREAM,
        ),
        publishes=(f"$KV.{names.QUOTA_BUCKET}.>", f"{names.DEAD_LETTERS_SUBJECT_PREFIX}.>"),
        creates=(_kv(names.QUOTA_BUCKET), names.DEAD_LETTERS_STREAM),
        purges=(names.DEAD_LETTERS_STREAM,),
    ),
    "proxy": _BATCH,
    "batch-worker": _BATCH,
    # Only verifies sessions: reads the signing keys and the ended sessions.
    "ui": Grant(reads=_EVERYONE_READS),
}
SERVICE_USERS: tuple[str, ...] = tuple(GRANTS)


def password_env(service: str) -> str:
    """``batch-worker`` -> ``NATS_BATCH_WORKER_PASSWORD`` (docker-compose's .env)."""
    return f"NATS_{service.upper().replace('-', '_')}_PASSWORD"


def _strings(values: Iterable[str], indent: str = "          ") -> str:
    # Quoted: an unquoted `$KV...` would be read as a variable reference. One per line, for reviewers.
    return "[\n" + "".join(f"{indent}  {json.dumps(v)}\n" for v in values) + f"{indent}]"


def authorization_block(password_of: Callable[[str], str]) -> str:
    """The server's ``authorization`` block; ``password_of(service)`` is the config text of its password."""
    lines = ["authorization {", "  users: ["]
    for service, grant in GRANTS.items():
        lines += [
            "    {",
            f"      user: {json.dumps(service)}",
            f"      password: {password_of(service)}",
            "      permissions: {",
            "        publish: {",
            f"          allow: {_strings(grant.publish_allow())}",
            f"          deny: {_strings(grant.publish_deny(service))}",
            "        }",
            "        subscribe: {",
            f"          allow: {_strings(grant.subscribe_allow(service))}",
        ]
        if deny := grant.subscribe_deny():
            lines.append(f"          deny: {_strings(deny)}")
        lines.append("        }")
        if grant.serves:
            lines.append("        allow_responses: true")  # replies to the requests it answers, one each
        lines += ["      }", "    }"]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def embedded_authorization(passwords: Mapping[str, str]) -> str:
    return authorization_block(lambda service: json.dumps(passwords[service]))


COMPOSE_HEADER = """\
# NATS with JetStream for the scale-out deployment: one server, or every node of a three-node cluster
# (docker-compose.cluster.yml gives each node its cluster routes on the command line, and the services
# AQUEDUCT_NATS_REPLICAS=3 and every node's address).
#
# GENERATED by `python -m aqueduct_cli.nats_users > infra/nats/nats.conf`; edit
# services/cli/aqueduct_cli/nats_users.py instead (a test keeps the two equal).
#
# One user per service, its password from the environment (NATS_<SERVICE>_PASSWORD in .env), each allowed
# only the subjects its code uses: only the directory writes the auth snapshot and answers the sign-in
# RPC, only auth writes the signing keys and ended sessions, only accounting writes budget decisions.
port: 4222
http_port: 8222
server_name: $SERVER_NAME
jetstream {
  store_dir: /data
  max_file_store: 50G
}
"""


def compose_config() -> str:
    return COMPOSE_HEADER + authorization_block(lambda service: f"${password_env(service)}")


if __name__ == "__main__":
    sys.stdout.write(compose_config())
