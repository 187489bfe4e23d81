#include "tollgate/proxy/tls.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tollgate/openssl_ptr.hpp"

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

/// The labels of the PEM blocks in `pem` ("CERTIFICATE", "PRIVATE KEY"), in order.
std::vector<std::string> pem_labels(const std::string& pem) {
    std::vector<std::string> labels;
    bio_ptr in(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    char* name = nullptr;
    char* header = nullptr;
    unsigned char* data = nullptr;
    long length = 0;
    // Reads each block whole without decoding (or decrypting) what is in it.
    while (in && PEM_read_bio(in.get(), &name, &header, &data, &length) == 1) {
        labels.emplace_back(name);
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
    }
    ERR_clear_error();  // the "no start line" that ends the loop
    return labels;
}

/// The listener's private key from the PEM file `path`. Throws
/// std::runtime_error starting "tls.key <path>: " when it cannot be read,
/// holds no private key, or the key does not decode.
pkey_ptr read_private_key(const std::string& path) {
    const std::string where = "tls.key " + path + ": ";
    std::ifstream file(path, std::ios::binary);
    if (!file) {
        throw std::runtime_error(where + "cannot read: " + std::strerror(errno));
    }
    // Bounded: a wrong path (/dev/zero, a log file) must not take the memory.
    constexpr std::size_t max_key_bytes = 1024 * 1024;
    std::string pem(max_key_bytes + 1, '\0');
    file.read(pem.data(), static_cast<std::streamsize>(pem.size()));
    if (file.bad()) {
        throw std::runtime_error(where + "cannot read: " + std::strerror(errno));
    }
    pem.resize(static_cast<std::size_t>(file.gcount()));
    if (pem.size() > max_key_bytes) {
        throw std::runtime_error(where + "is larger than 1 MiB: not a key file?");
    }
    // "PRIVATE KEY" (PKCS#8), "ENCRYPTED PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"...
    const auto labels = pem_labels(pem);
    const auto is_key = [](std::string_view label) { return label.ends_with("PRIVATE KEY"); };
    if (std::none_of(labels.begin(), labels.end(), is_key)) {
        std::string message = where + no_pem_block("private key");
        if (!labels.empty()) {
            // Most often the certificate, given as the key too.
            message += ", only " + labels.front();
        }
        throw std::runtime_error(message);
    }
    bio_ptr in(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    pkey_ptr key(in ? PEM_read_bio_PrivateKey(in.get(), nullptr, nullptr, nullptr) : nullptr);
    if (!key) {
        // A damaged block, an encrypted key, an algorithm OpenSSL lacks.
        throw std::runtime_error(where + "its private key cannot be decoded: " + last_tls_error());
    }
    return key;
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
        return no_pem_block(wanted);
    }
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    return buf;
}

std::string no_pem_block(std::string_view wanted) {
    return "holds no PEM " + std::string(wanted) + " (no \"-----BEGIN\" block of that kind)";
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
    // Loaded and checked here rather than by SSL_CTX_use_PrivateKey_file,
    // whose errors under OpenSSL 3 do not say what is wrong: a file with no
    // key is "DECODER routines::unsupported", and a key for another
    // certificate "key values mismatch", blamed on the key even when the
    // chain file has the right certificate in the wrong place.
    const pkey_ptr key = read_private_key(tls.key);
    X509* const leaf = SSL_CTX_get0_certificate(native);
    if (X509_check_private_key(leaf, key.get()) != 1) {
        ERR_clear_error();
        STACK_OF(X509)* chain = nullptr;
        SSL_CTX_get0_chain_certs(native, &chain);
        for (int i = 0; i < sk_X509_num(chain); ++i) {
            if (X509_check_private_key(sk_X509_value(chain, i), key.get()) == 1) {
                throw std::runtime_error(
                    "tls.cert " + tls.cert + ": the chain is in the wrong order: tls.key " +
                    tls.key + " is the key of certificate " + std::to_string(i + 2) +
                    " of the file, and that certificate (the server's) must come first, then "
                    "the ones that issued it");
            }
        }
        ERR_clear_error();
        throw std::runtime_error("tls.key " + tls.key + " does not match tls.cert " + tls.cert +
                                 " (it is not the key of the file's first certificate, the "
                                 "server's, nor of any other in it)");
    }
    if (SSL_CTX_use_PrivateKey(native, key.get()) != 1) {
        throw std::runtime_error("tls.key " + tls.key + ": " + last_tls_error());
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
