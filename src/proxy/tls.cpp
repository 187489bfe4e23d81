#include "tollgate/proxy/tls.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <stdexcept>

namespace tollgate::proxy {
namespace {

constexpr unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
/// What the TLS listener accepts, in its order of preference.
constexpr unsigned char http11_http10[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1',
                                           8, 'h', 't', 't', 'p', '/', '1', '.', '0'};

// ALPN: tollgate speaks HTTP/1.1, and HTTP/1.0 to the clients that ask for
// it (http/1.1 wins when both are offered). A client that offers protocols
// but neither is refused (RFC 7301 3.2), rather than left to find out.
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, outlen, http11_http10, sizeof http11_http10, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

void set_min_version(SSL_CTX* ctx, const std::string& version) {
    SSL_CTX_set_min_proto_version(ctx, version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION);
}

}  // namespace

std::string last_tls_error(std::string_view wanted) {
    const unsigned long code = ERR_get_error();
    ERR_clear_error();
    if (code == 0) {
        return "unknown TLS error";
    }
    if (!wanted.empty() && ERR_GET_LIB(code) == ERR_LIB_PEM &&
        ERR_GET_REASON(code) == PEM_R_NO_START_LINE) {
        // OpenSSL's "PEM routines::no start line": no PEM block of that kind
        // (not PEM at all, or a key where the certificate belongs).
        return "holds no PEM " + std::string(wanted) + " (no \"-----BEGIN\" block of that kind)";
    }
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    return buf;
}

std::shared_ptr<asio::ssl::context> make_server_context(const tls_config& tls) {
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
    SSL_CTX* native = ctx->native_handle();
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::single_dh_use);
    set_min_version(native, tls.min_version);
    // Idle keep-alive connections give their read and write buffers back.
    SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS);
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(native, tls.cert.c_str()) != 1) {
        throw std::runtime_error("tls.cert " + tls.cert + ": " + last_tls_error("certificate"));
    }
    if (SSL_CTX_use_PrivateKey_file(native, tls.key.c_str(), SSL_FILETYPE_PEM) != 1) {
        throw std::runtime_error("tls.key " + tls.key + ": " + last_tls_error("private key"));
    }
    if (SSL_CTX_check_private_key(native) != 1) {
        throw std::runtime_error("tls.key " + tls.key + " does not match tls.cert " + tls.cert +
                                 ": " + last_tls_error());
    }
    SSL_CTX_set_alpn_select_cb(native, select_alpn, nullptr);
    return ctx;
}

std::shared_ptr<asio::ssl::context> make_upstream_context(const upstream_config& upstream) {
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    SSL_CTX* native = ctx->native_handle();
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3);
    set_min_version(native, "1.2");
    SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS);
    ERR_clear_error();
    if (!upstream.ca_file.empty()) {
        if (SSL_CTX_load_verify_locations(native, upstream.ca_file.c_str(), nullptr) != 1) {
            throw std::runtime_error("upstream.ca_file " + upstream.ca_file + ": " +
                                     last_tls_error("certificate"));
        }
    } else if (SSL_CTX_set_default_verify_paths(native) != 1) {
        throw std::runtime_error("the system CA store cannot be loaded: " + last_tls_error());
    }
    ctx->set_verify_mode(upstream.insecure_skip_verify ? asio::ssl::verify_none
                                                       : asio::ssl::verify_peer);
    SSL_CTX_set_alpn_protos(native, http11, sizeof http11);
    return ctx;
}

void prepare_upstream_tls(stream::tls_stream& tls, const upstream_server& server, bool verify) {
    error_code ec;
    asio::ip::make_address(server.host, ec);
    const bool name = static_cast<bool>(ec);  // not an address literal
    if (name) {
        SSL_set_tlsext_host_name(tls.native_handle(), server.host.c_str());
    }
    if (verify) {
        // OpenSSL's own check, as part of the chain's, rather than a verify
        // callback (asio::ssl::host_name_verification): a mismatch then has
        // its own verification result ("hostname mismatch", "IP address
        // mismatch") for the warning about the failed handshake, where a
        // callback's refusal reads "unspecified certificate verification
        // error". Both match names as X509_check_host does, without flags.
        X509_VERIFY_PARAM* param = SSL_get0_param(tls.native_handle());
        const int set = name ? X509_VERIFY_PARAM_set1_host(param, server.host.c_str(), 0)
                             : X509_VERIFY_PARAM_set1_ip_asc(param, server.host.c_str());
        if (set != 1) {
            // Never no check at all: an address OpenSSL does not parse (an
            // IPv6 literal with a zone) gets the callback's.
            ERR_clear_error();
            tls.set_verify_callback(asio::ssl::host_name_verification(server.host));
        }
    }
}

std::string upstream_handshake_failure(stream::tls_stream& tls, const error_code& ec, bool verify) {
    // The result stays X509_V_OK when the handshake failed before the
    // certificate was checked; without verification it is not the cause.
    const long result = SSL_get_verify_result(tls.native_handle());
    if (verify && result != X509_V_OK) {
        return std::string("certificate verify failed: ") + X509_verify_cert_error_string(result);
    }
    return ec.message();
}

}  // namespace tollgate::proxy
