#pragma once
/// @file openssl_ptr.hpp
/// Owning pointers for the OpenSSL objects tollgate reads certificates and
/// keys with: each frees its object with OpenSSL's own function.

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>

namespace tollgate {

/// Deleter calling `Free` (BIO_free, X509_free, ...).
template <auto Free>
struct openssl_free {
    template <class T>
    void operator()(T* p) const {
        Free(p);
    }
};

using bio_ptr = std::unique_ptr<BIO, openssl_free<&BIO_free>>;
using x509_ptr = std::unique_ptr<X509, openssl_free<&X509_free>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_free<&EVP_PKEY_free>>;

}  // namespace tollgate
