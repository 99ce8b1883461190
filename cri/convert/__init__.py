"""Protobuf <-> model conversion, one module per topic, with the request-shape validation
that goes with it. Nothing under runtime/ sees a protobuf message: it stops here."""
