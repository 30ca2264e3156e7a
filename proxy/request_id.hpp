// Request correlation: X-Request-Id kept from the client when usable, else generated; the W3C
// trace id read from `traceparent` for the access log (the header itself passes untouched).
#pragma once

#include <string>
#include <string_view>

namespace ifm::proxy {

// 1 to 128 visible ASCII characters (0x21..0x7e): anything else could break a log line or a
// header, or be used to flood logs, so it is replaced rather than passed on.
bool valid_request_id(std::string_view id);

// 16 random bytes as 32 lower-case hex digits. Each thread has its own generator (one per
// worker), so no lock is taken on the request path.
std::string generate_request_id();

// The trace-id of a version-00 `traceparent` (W3C Trace Context §3.2), or empty when the value
// is not well-formed or the id is all zeros.
std::string_view trace_id_of(std::string_view traceparent);

}  // namespace ifm::proxy
