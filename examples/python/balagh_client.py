#!/usr/bin/env python3
"""A balagh client in Python with grpcio: create a ticket, read it back, list, and show an error.

The stubs are generated from the repository's protos at start-up (grpcio-tools ships the
compiler), so the example needs nothing but `pip install grpcio grpcio-tools`:

    python3 examples/python/balagh_client.py 127.0.0.1:50051

It is also the interop test: `tests/interop_python.rs` runs it against a real server and it
exits non-zero if anything is not as the contract says.
"""

import importlib
import os
import sys
import tempfile
import uuid

import grpc
from grpc_tools import protoc

try:
    import importlib.resources as resources
except ImportError:  # pragma: no cover
    resources = None

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
# Every file of the package: ticket.proto imports sla.proto, and more may follow.
PROTOS = sorted(
    os.path.join("balagh", "v1", name)
    for name in os.listdir(os.path.join(PROTO_ROOT, "balagh", "v1"))
    if name.endswith(".proto")
)


def generate_stubs():
    """Compiles the protos into a temporary package directory and imports them."""
    out = tempfile.mkdtemp(prefix="balagh-stubs-")
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + PROTOS) != 0:
        raise SystemExit("could not compile the protos")
    sys.path.insert(0, out)
    ticket_pb2 = importlib.import_module("balagh.v1.ticket_pb2")
    ticket_grpc = importlib.import_module("balagh.v1.ticket_pb2_grpc")
    common_pb2 = importlib.import_module("balagh.v1.common_pb2")
    return ticket_pb2, ticket_grpc, common_pb2


def main(address):
    ticket_pb2, ticket_grpc, common_pb2 = generate_stubs()
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        tickets = ticket_grpc.TicketServiceStub(channel)

        # Create a report. request_id makes a retry safe: the same id returns the same ticket.
        request = ticket_pb2.CreateTicketRequest(
            type=common_pb2.TICKET_TYPE_REPORT,
            channel=common_pb2.CHANNEL_APP,
            category="waste_collection",
            subject="لم يتم جمع النفايات في الحي",
            description="الحاويات ممتلئة منذ ثلاثة أيام",
            reporter=ticket_pb2.Reporter(name="Test Citizen", phone="+968 9000 0002"),
            location=ticket_pb2.Location(
                wilayat="as_seeb", area="Al Mawaleh", point=ticket_pb2.LatLng(latitude=23.62, longitude=58.25)
            ),
            request_id=str(uuid.uuid4()),
        )
        created = tickets.CreateTicket(request, timeout=10).ticket
        retried = tickets.CreateTicket(request, timeout=10).ticket
        assert retried.id == created.id, "a retry with the same request_id returns the first answer"
        print(f"created {created.reference} ({created.id}) status={common_pb2.TicketStatus.Name(created.status)}")

        # Read it back by reference; the Arabic text comes back exactly as sent.
        fetched = tickets.GetTicket(ticket_pb2.GetTicketRequest(reference=created.reference), timeout=10).ticket
        assert fetched.subject == request.subject, "Arabic text round-trips exactly"
        print(f"got {fetched.reference}: {fetched.subject}")

        # List with a filter and an Arabic search that ignores spelling variants (ة/ه, diacritics).
        listed = tickets.ListTickets(
            ticket_pb2.ListTicketsRequest(directorates=["health_affairs"], text="النفايـات", page_size=10),
            timeout=10,
        )
        assert any(t.id == created.id for t in listed.tickets), "the new ticket is found"
        print(f"listed {len(listed.tickets)} ticket(s) of health_affairs mentioning النفايات")

        # Errors are precise: INVALID_ARGUMENT naming the field.
        try:
            tickets.GetTicket(ticket_pb2.GetTicketRequest(reference="MCT-26-1"), timeout=10)
            raise AssertionError("an invalid reference must be refused")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
            print(f"invalid reference refused: {error.code().name}: {error.details()}")

    print("python interop: ok")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051")
