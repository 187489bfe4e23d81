#pragma once
/// @file concurrency.hpp
/// Concurrency slots (DESIGN.md section 4): the most requests that may be in
/// flight upstream at once, shared fairly by the keys that are active.
///
/// A key is *active* while it holds at least one slot. A key may take a new
/// slot while
///
///     inflight(key) < max(1, capacity / active_keys)  and  in_flight() < capacity
///
/// where a key that is not yet active counts itself as joining
/// (`active_keys + 1`). The share is computed at every acquire from the
/// current active keys, so it grows as soon as another key drains and shrinks
/// as soon as one joins. A key that joins never pre-empts anyone: a key left
/// over its share by a rebalance keeps what it holds and gets no new slot
/// until it drains below its share.
///
/// Invariants, always: `in_flight() <= capacity()` (but for slots held
/// when `set_capacity` lowered it: no slot is granted until enough of them
/// return); `in_flight()` equals the
/// slots held; a slot is returned exactly once (it is a move-only RAII guard);
/// a key whose last slot returns stops being active.
///
/// Pure policy: no networking header and no clock of its own. Queue deadlines
/// are plain durations on the caller's clock (normally
/// `tollgate::limit::clock::now()`), and the caller drives time through
/// `expire(now)`, so tests control time exactly.
///
/// Thread-safety: every member function of `concurrency_limiter` may be called
/// from any number of threads at once. A `slot` object is an ordinary value
/// (use one object from one thread at a time), but different slots may be
/// released concurrently from any threads.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tollgate::limit {

/// Fair-share concurrency slots with an optional FIFO wait queue.
///
/// Always owned by a `std::shared_ptr` (see `create`), because every slot
/// keeps its limiter alive: a response still being relayed after a config
/// reload must be able to return its slot to the limiter it came from.
class concurrency_limiter : public std::enable_shared_from_this<concurrency_limiter> {
    // One node of `keys_`: (key, slots in flight). A slot points at it
    // directly; the node is stable for as long as any slot of that key is
    // held, because only the return of the key's last slot removes it.
    using key_entry = std::pair<const std::string, std::size_t>;

public:
    /// Identifies a queued request for `cancel`. Never 0.
    using waiter_id = std::uint64_t;

    /// One request's claim on upstream concurrency. Move-only RAII guard: the
    /// destructor, or the first `release()`, returns the slot exactly once;
    /// a moved-from or released slot holds nothing and returning it again is
    /// a no-op. Keeps its limiter alive.
    class slot {
    public:
        /// An empty slot that holds nothing.
        slot() noexcept = default;
        slot(slot&& other) noexcept;
        /// Returns the slot held by `*this` (if any), then takes over `other`'s.
        slot& operator=(slot&& other) noexcept;
        slot(const slot&) = delete;
        slot& operator=(const slot&) = delete;
        ~slot() { release(); }

        /// True until the slot is released or moved from.
        bool held() const noexcept { return owner_ != nullptr; }

        /// The key the slot was granted to; empty when not held. Valid only
        /// while the slot is held.
        std::string_view key() const noexcept;

        /// Returns the slot now. Idempotent. May run queued waiters'
        /// `on_done` on this thread (see `enqueue`).
        void release() noexcept;

    private:
        friend class concurrency_limiter;
        slot(std::shared_ptr<concurrency_limiter> owner, key_entry* entry) noexcept
            : owner_(std::move(owner)), entry_(entry) {}

        std::shared_ptr<concurrency_limiter> owner_;
        key_entry* entry_ = nullptr;
    };

    /// Called exactly once per queued request: with a slot when one is
    /// granted, or with `std::nullopt` when its deadline passes. Must not throw.
    using completion = std::function<void(std::optional<slot>)>;

    /// What `enqueue` did.
    struct enqueue_result {
        /// Set when a slot was free at once; `on_done` is then never called.
        std::optional<slot> granted;
        /// When nothing was granted: the request is queued under this id.
        waiter_id id = 0;
    };

    /// `capacity` is the most slots held at once. `capacity == 0` means
    /// "off" (DESIGN: `concurrency.capacity: 0`): every acquire succeeds and
    /// is still counted, so the gauges stay meaningful, and nothing is ever
    /// queued. The proxy does not consult the limiter at all in that case.
    static std::shared_ptr<concurrency_limiter> create(std::size_t capacity);

    concurrency_limiter(const concurrency_limiter&) = delete;
    concurrency_limiter& operator=(const concurrency_limiter&) = delete;
    /// Fails any request still queued with `std::nullopt` (unreachable in
    /// practice: a queued request implies a held slot, which keeps the limiter
    /// alive).
    ~concurrency_limiter();

    /// Takes a slot for `key` if the fair-share rule allows it now.
    ///
    /// Never takes a slot a queued request could use: every release grants
    /// all queued requests that may take a slot, so whatever is still queued
    /// may not, and neither may a newcomer of the same key (the rule depends
    /// only on the key). So there is no need to check the queue here.
    std::optional<slot> try_acquire(std::string_view key);

    /// Takes a slot at once if `try_acquire` would; otherwise queues the
    /// request (FIFO) until `deadline` (on the caller's clock) and returns its
    /// id.
    ///
    /// When a slot is released, it goes to the first queued request, in FIFO
    /// order, whose key may take a slot under the fair-share rule; requests
    /// whose key may not are skipped, not blocking the others.
    ///
    /// `on_done` is called exactly once, never while the limiter's lock is
    /// held (so it may call back into the limiter):
    /// * with a slot, on the thread that released the slot that made room
    ///   (any thread: post to your own executor);
    /// * with `std::nullopt`, from `expire(now)` once `deadline <= now`;
    /// * never, if `cancel(id)` returned true or a slot was granted at once.
    /// If nobody takes the slot it is handed (e.g. the client has gone), it is
    /// returned when the `std::optional<slot>` argument is destroyed.
    /// `on_done` may run inside another slot's `release()` or destructor, so it
    /// must not touch that slot object; posting to its own executor is safest.
    ///
    /// @throws std::invalid_argument if `on_done` is empty; std::bad_alloc.
    enqueue_result enqueue(std::string_view key, std::chrono::nanoseconds deadline,
                           completion on_done);

    /// Removes a queued request (e.g. its client disconnected). Returns true
    /// if it was still queued: its `on_done` is then destroyed uncalled.
    /// Returns false if it had already been granted or expired (or `id` is
    /// unknown); then `on_done` has run or is about to run.
    bool cancel(waiter_id id);

    /// Fails, with `std::nullopt`, every queued request whose deadline is
    /// `<= now`. Calls their `on_done` on this thread, outside the lock.
    void expire(std::chrono::nanoseconds now) noexcept;

    /// The earliest deadline among queued requests, to arm a timer for
    /// `expire`; nullopt when nothing is queued.
    std::optional<std::chrono::nanoseconds> next_deadline() const;

    std::size_t capacity() const noexcept { return capacity_.load(std::memory_order_relaxed); }
    /// A new capacity (a config reload) for a limiter with one (> 0). Slots
    /// held stay held and count against it: raised, queued requests that
    /// may now take a slot get one; lowered, new slots wait until in_flight()
    /// is below it.
    void set_capacity(std::size_t capacity);
    /// Slots held now, over all keys.
    std::size_t in_flight() const;
    /// Slots held now by `key` (0 when it is not active).
    std::size_t in_flight(std::string_view key) const;
    /// Keys holding at least one slot.
    std::size_t active_keys() const;
    /// Requests waiting in the queue.
    std::size_t queued() const;
    /// Every active key with the slots it holds, in no particular order.
    std::vector<std::pair<std::string, std::size_t>> keys_in_flight() const;
    /// The `n` active keys holding the most slots, most first (for /debug/keys).
    std::vector<std::pair<std::string, std::size_t>> top_in_flight(std::size_t n) const;

private:
    struct string_hash {
        using is_transparent = void;  // find(string_view) without building a std::string
        std::size_t operator()(std::string_view text) const noexcept {
            return std::hash<std::string_view>{}(text);
        }
    };
    using key_map = std::unordered_map<std::string, std::size_t, string_hash, std::equal_to<>>;
    static_assert(std::is_same_v<key_map::value_type, key_entry>);

    struct waiter {
        std::string key;
        std::chrono::nanoseconds deadline{};
        completion on_done;
        std::optional<slot> granted;  ///< filled under the lock, handed over outside it
    };
    using waiter_map = std::map<waiter_id, waiter>;  ///< ids grow, so this is FIFO order
    /// Requests whose `on_done` is due. A multimap so that batches of
    /// different limiters (whose ids may coincide) can be merged.
    using ready_map = std::multimap<waiter_id, waiter>;
    using deadline_set = std::set<std::pair<std::chrono::nanoseconds, waiter_id>>;

    explicit concurrency_limiter(std::size_t capacity);

    /// The fair-share rule for the key at `it` (`keys_.end()` = joining).
    bool may_take_locked(key_map::const_iterator it) const noexcept;
    /// Counts one more slot for `key` if the rule allows it; else nullptr.
    key_entry* try_take_locked(std::string_view key);
    key_entry* insert_key_locked(std::string_view key);
    /// Grants a slot to every queued request that may take one now.
    void grant_locked(ready_map& ready) noexcept;
    void release_slot(key_entry* entry) noexcept;
    /// Runs `on_done` of every request in `ready`, outside any lock.
    static void deliver(ready_map ready) noexcept;

    /// Written under `mutex_` (set_capacity), read under it or, by
    /// capacity(), without it.
    std::atomic<std::size_t> capacity_;

    mutable std::mutex mutex_;
    std::size_t total_ = 0;  ///< slots held, over all keys
    key_map keys_;           ///< active keys only
    /// Nodes of keys that went idle, kept so the next new key reuses the
    /// node and its string buffer instead of allocating on the hot path.
    std::vector<key_map::node_type> spare_;
    waiter_map queue_;
    deadline_set deadlines_;
    waiter_id next_id_ = 1;
};

}  // namespace tollgate::limit
