#pragma once
/// @file net.hpp
/// Short names for the Asio and Beast types used across the network layer.
/// Policy code (limit/, keying/) must not include this header.

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace tollgate {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using error_code = boost::system::error_code;

}  // namespace tollgate
