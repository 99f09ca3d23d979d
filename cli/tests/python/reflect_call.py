"""Lists an engine's services and calls one method, knowing nothing of Martix but what gRPC
server reflection (v1alpha, as Python's grpcio-reflection speaks it) tells.

usage: reflect_call.py HOST:PORT SERVICE METHOD REQUEST_JSON
prints: one line per service, then the response as JSON (one line).
"""

import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> None:
    address, service, method, request = sys.argv[1:5]
    channel = grpc.insecure_channel(address)
    db = ProtoReflectionDescriptorDatabase(channel)
    for name in db.get_services():
        print(f"service {name}")
    pool = descriptor_pool.DescriptorPool(db)
    m = pool.FindServiceByName(service).FindMethodByName(method)
    req_class = message_factory.GetMessageClass(m.input_type)
    resp_class = message_factory.GetMessageClass(m.output_type)
    call = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=req_class.SerializeToString,
        response_deserializer=resp_class.FromString,
    )
    response = call(json_format.Parse(request, req_class()), timeout=20)
    print(json_format.MessageToJson(response, indent=None))


if __name__ == "__main__":
    main()
