#pragma once
// Heap bytes in use, for the memory-per-key tests.

#include <cstddef>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TOLLGATE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TOLLGATE_SANITIZED 1
#endif
#endif

namespace tollgate::test {

/// Heap bytes in use, or 0 where glibc's counters are not the real
/// allocator (a sanitizer build, another libc).
inline std::size_t heap_in_use() {
#if defined(__GLIBC__) && !defined(TOLLGATE_SANITIZED)
    const struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
#else
    return 0;
#endif
}

}  // namespace tollgate::test
