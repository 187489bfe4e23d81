#pragma once
/// @file clock.hpp
/// The time source of the policy layer. Rate buckets and concurrency slots
/// never read the system clock themselves: they are handed a `clock`, so
/// production uses `steady_clock` and tests drive time to the nanosecond with
/// `manual_clock` (999 ms vs 1000 ms, no sleeps).
///
/// Thread-safety: every clock here may be read (and `manual_clock` moved)
/// from any number of threads at once.

#include <atomic>
#include <chrono>

namespace tollgate::limit {

/// A monotonic time source. Only differences between two readings mean
/// anything; the epoch is arbitrary but fixed for the life of the process.
class clock {
public:
    virtual ~clock() = default;

    /// Time since the clock's epoch; never decreases (for `manual_clock`,
    /// unless a test deliberately sets it back).
    virtual std::chrono::nanoseconds now() const noexcept = 0;
};

/// `std::chrono::steady_clock`, the production clock.
class steady_clock final : public clock {
public:
    std::chrono::nanoseconds now() const noexcept override {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::steady_clock::now().time_since_epoch());
    }
};

/// A clock that moves only when told to. Reads and moves are atomic, so a
/// test may advance it while worker threads read it.
class manual_clock final : public clock {
public:
    explicit manual_clock(std::chrono::nanoseconds start = std::chrono::nanoseconds{0}) noexcept
        : now_{start.count()} {}

    std::chrono::nanoseconds now() const noexcept override {
        return std::chrono::nanoseconds{now_.load(std::memory_order_acquire)};
    }

    /// Jumps to an absolute time (may go backwards: algorithms must cope).
    void set(std::chrono::nanoseconds t) noexcept {
        now_.store(t.count(), std::memory_order_release);
    }

    /// Moves forward by `d`.
    void advance(std::chrono::nanoseconds d) noexcept {
        now_.fetch_add(d.count(), std::memory_order_acq_rel);
    }

private:
    std::atomic<std::chrono::nanoseconds::rep> now_;
};

}  // namespace tollgate::limit
