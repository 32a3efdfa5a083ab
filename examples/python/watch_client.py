#!/usr/bin/env python3
"""Follow tickets live from Python with grpcio, and resume from the last cursor.

    python3 examples/python/watch_client.py 127.0.0.1:50051 roads

Prints each change of the directorate's tickets. Keep the last cursor you received; after a
disconnect, send it back and the stream continues exactly after it.

With `--check N` it is also the interop test (`tests/interop_python.rs`): it reads N changes,
disconnects halfway, resumes from its cursor, and exits non-zero unless it saw N distinct
changes in strictly increasing cursor order.
"""

import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from balagh_client import generate_stubs  # noqa: E402


def cursor_position(cursor):
    # Cursors are opaque to clients; the check below only compares their order.
    return int(cursor.split(".", 1)[1])


def watch(stub, ticket_pb2, directorate, cursor, limit):
    request = ticket_pb2.WatchTicketsRequest(
        cursor=cursor or "", filter=ticket_pb2.TicketFilter(directorates=[directorate])
    )
    received = []
    for change in stub.WatchTickets(request):
        if change.kind == ticket_pb2.CHANGE_KIND_HEARTBEAT:
            continue
        received.append(change)
        print(f"{ticket_pb2.ChangeKind.Name(change.kind):<28} {change.ticket.reference} {change.ticket.subject}")
        if limit is not None and len(received) >= limit:
            break
    return received


def main():
    args = sys.argv[1:]
    check = None
    if "--check" in args:
        i = args.index("--check")
        check = int(args[i + 1])
        del args[i : i + 2]
    address = args[0] if args else "127.0.0.1:50051"
    directorate = args[1] if len(args) > 1 else "roads"
    ticket_pb2, ticket_grpc, _ = generate_stubs()
    with grpc.insecure_channel(address) as channel:
        stub = ticket_grpc.TicketServiceStub(channel)
        if check is None:
            watch(stub, ticket_pb2, directorate, None, None)
            return
        # Interop check: read half from the start of the log, disconnect, resume, read the rest.
        first = watch(stub, ticket_pb2, directorate, "v1.0", check // 2)
        rest = watch(stub, ticket_pb2, directorate, first[-1].cursor, check - len(first))
        positions = [cursor_position(c.cursor) for c in first + rest]
        assert len(positions) == check, positions
        assert all(a < b for a, b in zip(positions, positions[1:])), positions
        assert all(c.ticket.assignment.directorate == directorate for c in first + rest)
        print(f"python watch interop: ok ({check} changes, resumed once)")


if __name__ == "__main__":
    main()
