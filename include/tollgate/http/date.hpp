#pragma once
/// @file date.hpp
/// The `Date` field (RFC 9110 6.6.1): tollgate's own responses carry one,
/// and a response forwarded without one gets it.

#include <ctime>
#include <string>
#include <string_view>

namespace tollgate {

/// `t` as an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
std::string http_date(std::time_t t);

/// The current second as an IMF-fixdate, formatted once per second per
/// thread. The view stays valid in the calling thread until its next call.
std::string_view http_date_now();

}  // namespace tollgate
