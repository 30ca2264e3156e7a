#pragma once
// Raw-socket origin for smuggling tests: records every byte per connection and answers each
// request its own (deliberately simple) framing detector finds with "200 ok". A proxy that
// smuggles shows up as a second request or as stray bytes here.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ifm::test {

class raw_origin {
 public:
  raw_origin();
  ~raw_origin();
  raw_origin(const raw_origin&) = delete;
  raw_origin& operator=(const raw_origin&) = delete;

  std::uint16_t port() const;
  std::string bytes_received() const;                     // all connections, in accept order
  std::vector<std::string> bytes_per_connection() const;  // accept order
  std::size_t request_count() const;
  std::uint64_t connections_accepted() const;
  void clear();  // forgets bytes and counts (connections keep being served)
  void stop();

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

// Length of the first complete request in `buf` (headers to CRLFCRLF, then Content-Length or
// chunked body); 0 if incomplete; npos if the framing is unparseable.
std::size_t raw_request_length(std::string_view buf);

}  // namespace ifm::test
