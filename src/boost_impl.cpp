// Asio and Beast are compiled once, here, instead of in every translation unit
// that includes them (BOOST_ASIO_SEPARATE_COMPILATION / BOOST_BEAST_SEPARATE_COMPILATION).
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>

// Builds with assertions (debug, ASan, TSan) route the Boost assertions of
// this file here (BOOST_ENABLE_ASSERT_DEBUG_HANDLER, set for this file only in
// CMakeLists.txt); release builds compile them out as before.
namespace boost {

void assertion_failed(char const* expr, char const* function, char const* file, long line) {
    // Beast 1.81's parse_chunk_header asserts that a last chunk it parses
    // again holds at least 5 bytes ("\r\n0\r\n"). That is only true after a
    // data chunk: a body whose first chunk is the last one ("0\r\n" and
    // trailers) arriving a few bytes at a time re-enters with 4. The code
    // after the assertion handles that case (it runs in release builds);
    // only the assertion is wrong, so it alone is let through.
    if (std::strcmp(expr, "n >= 5") == 0 && std::strstr(file, "beast/http/impl/basic_parser.ipp")) {
        return;
    }
    std::fprintf(stderr, "%s:%ld: %s: Assertion `%s' failed.\n", file, line, function, expr);
    std::abort();
}

void assertion_failed_msg(char const* expr, char const* msg, char const* function, char const* file,
                          long line) {
    std::fprintf(stderr, "%s:%ld: %s: Assertion `%s' failed: %s\n", file, line, function, expr,
                 msg);
    std::abort();
}

}  // namespace boost
