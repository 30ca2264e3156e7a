// Separate compilation of Asio's TLS support (origin connections), apart from boost_src.cpp so
// that what links only ifm_boost (the simulator) needs no OpenSSL.
#include <boost/asio/ssl/impl/src.hpp>
