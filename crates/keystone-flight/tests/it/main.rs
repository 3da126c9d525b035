//! Integration tests of the Flight SQL service: a real gRPC server on
//! loopback over a real lake in a temporary folder, called with arrow-flight's
//! Flight SQL client. The third-party clients (ADBC, flightsql-dbapi,
//! pyarrow.flight) are tested in tests/interop/test_flight.py.

mod flight;
