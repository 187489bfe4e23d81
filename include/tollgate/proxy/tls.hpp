#pragma once
/// @file tls.hpp
/// TLS contexts: the listener's (certificate, key, minimum version, ALPN)
/// and the one for `https://` upstreams (verification against the system
/// CA store or `upstream.ca_file`). Both are built with the runtime, so a
/// reload (SIGHUP) picks up new files for new connections while existing
/// ones keep the context they started with.

#include <memory>
#include <string_view>

#include <boost/asio/ssl.hpp>

#include "tollgate/config/config.hpp"
#include "tollgate/proxy/stream.hpp"

namespace tollgate::proxy {

/// The listener's context. Throws std::runtime_error naming the file and
/// the reason when the certificate or key cannot be used: a key file with
/// no private key, a key that is not the first certificate's (naming both
/// files), or a chain whose server certificate is not first (naming
/// tls.cert).
std::shared_ptr<asio::ssl::context> make_server_context(const tls_config& tls);

/// The context for `https://` upstreams. Throws std::runtime_error when
/// `upstream.ca_file` cannot be loaded.
std::shared_ptr<asio::ssl::context> make_upstream_context(const upstream_config& upstream);

/// Prepares a client TLS stream to `server`: SNI with the server's host
/// name (not for IP literals, as RFC 6066 says) and, when `verify`, a
/// check that the certificate names that host or address.
void prepare_upstream_tls(stream::tls_stream& tls, const upstream_server& server, bool verify);

/// Why the client handshake on `tls` failed with `ec`, for a log line:
/// when `verify` and the certificate did not verify, OpenSSL's
/// verification result ("certificate has expired"), which the error alone
/// ("certificate verify failed") does not say; else the error's text.
std::string upstream_handshake_failure(stream::tls_stream& tls, const error_code& ec, bool verify);

/// OpenSSL's reason for the last failure, for log lines and errors.
/// `wanted` (e.g. "certificate") is what a file was read for: a file
/// without a PEM block of that kind is then said so in those words.
std::string last_tls_error(std::string_view wanted = {});

/// "holds no PEM <wanted> (...)": what a file without a PEM block of the
/// kind it was read for is said to hold.
std::string no_pem_block(std::string_view wanted);

}  // namespace tollgate::proxy
