#include "tollgate/limit/concurrency.hpp"

#include <algorithm>
#include <iterator>
#include <stdexcept>

namespace tollgate::limit {

namespace {

// Enough to absorb the churn of keys coming and going between two requests;
// more would only pin memory.
constexpr std::size_t max_spare_nodes = 64;

// Buckets are sized for every key that can be active at once (at most one per
// slot), so inserting a key never rehashes; beyond this, occasional rehashes
// are cheaper than the memory.
constexpr std::size_t max_reserved_keys = 4096;

}  // namespace

// ---- slot ------------------------------------------------------------------

concurrency_limiter::slot::slot(slot&& other) noexcept
    : owner_(std::move(other.owner_)), entry_(std::exchange(other.entry_, nullptr)) {}

concurrency_limiter::slot& concurrency_limiter::slot::operator=(slot&& other) noexcept {
    if (this != &other) {
        // Take `other` over first, so our old slot is returned after the
        // assignment is complete, whatever its release triggers.
        slot old(std::move(*this));
        owner_ = std::move(other.owner_);
        entry_ = std::exchange(other.entry_, nullptr);
    }
    return *this;
}

std::string_view concurrency_limiter::slot::key() const noexcept {
    return entry_ != nullptr ? std::string_view(entry_->first) : std::string_view{};
}

void concurrency_limiter::slot::release() noexcept {
    if (owner_ == nullptr) {
        return;
    }
    // Empty ourselves before returning the slot, so that anything the return
    // runs (waiters' callbacks) sees this slot as released, and a second
    // release() is a no-op. `owner` keeps the limiter alive until we are done.
    const std::shared_ptr<concurrency_limiter> owner = std::move(owner_);
    key_entry* const entry = std::exchange(entry_, nullptr);
    owner->release_slot(entry);
}

// ---- concurrency_limiter ---------------------------------------------------

std::shared_ptr<concurrency_limiter> concurrency_limiter::create(std::size_t capacity) {
    // Not make_shared: the constructor is private so that every limiter is
    // owned by a shared_ptr, which slots rely on (shared_from_this).
    return std::shared_ptr<concurrency_limiter>(new concurrency_limiter(capacity));
}

concurrency_limiter::concurrency_limiter(std::size_t capacity) : capacity_(capacity) {
    keys_.reserve(capacity == 0 ? max_spare_nodes : std::min(capacity, max_reserved_keys));
    // Reserved up front so that parking a node, which happens while returning
    // a slot (noexcept), never allocates.
    spare_.reserve(max_spare_nodes);
}

concurrency_limiter::~concurrency_limiter() {
    ready_map ready;
    ready.merge(queue_);
    deliver(std::move(ready));
}

void concurrency_limiter::set_capacity(std::size_t capacity) {
    if (capacity == 0 || this->capacity() == 0) {
        throw std::invalid_argument(
            "concurrency_limiter::set_capacity: a limiter that is off "
            "stays off; make a new one");
    }
    ready_map ready;
    {
        const std::lock_guard lock(mutex_);
        capacity_.store(capacity, std::memory_order_relaxed);
        grant_locked(ready);
    }
    deliver(std::move(ready));
}

bool concurrency_limiter::may_take_locked(key_map::const_iterator it) const noexcept {
    const std::size_t capacity = capacity_.load(std::memory_order_relaxed);
    if (capacity == 0) {
        return true;  // off: count, never refuse
    }
    if (total_ >= capacity) {
        return false;
    }
    const bool active = it != keys_.end();
    const std::size_t key_in_flight = active ? it->second : 0;
    // The max(1, ...) of the contract never binds once total < capacity
    // (every active key holds a slot, so sharing <= capacity), but it keeps
    // the formula the documented one.
    const std::size_t sharing = keys_.size() + (active ? 0 : 1);
    const std::size_t share = std::max<std::size_t>(1, capacity / sharing);
    return key_in_flight < share;
}

concurrency_limiter::key_entry* concurrency_limiter::insert_key_locked(std::string_view key) {
    if (!spare_.empty()) {
        key_map::node_type node = std::move(spare_.back());
        spare_.pop_back();
        node.key().assign(key);  // reuses the buffer of the key it last held
        node.mapped() = 0;
        return &*keys_.insert(std::move(node)).position;
    }
    return &*keys_.emplace(std::string(key), 0).first;
}

concurrency_limiter::key_entry* concurrency_limiter::try_take_locked(std::string_view key) {
    const auto it = keys_.find(key);
    if (!may_take_locked(it)) {
        return nullptr;
    }
    key_entry* const entry = it != keys_.end() ? &*it : insert_key_locked(key);
    ++entry->second;
    ++total_;
    return entry;
}

std::optional<concurrency_limiter::slot> concurrency_limiter::try_acquire(std::string_view key) {
    key_entry* entry = nullptr;
    {
        const std::lock_guard lock(mutex_);
        entry = try_take_locked(key);
    }
    if (entry == nullptr) {
        return std::nullopt;
    }
    // Safe outside the lock: the entry cannot go away while this slot, not
    // yet built, is counted in it.
    return slot(shared_from_this(), entry);
}

concurrency_limiter::enqueue_result concurrency_limiter::enqueue(std::string_view key,
                                                                 std::chrono::nanoseconds deadline,
                                                                 completion on_done) {
    if (!on_done) {
        throw std::invalid_argument("concurrency_limiter::enqueue: empty on_done");
    }
    if (auto granted = try_acquire(key)) {
        return {std::move(granted), 0};
    }

    // Build the queue and deadline nodes before taking the lock, so nothing
    // under it allocates or throws: a failure between the two inserts would
    // leave a waiter that can never expire.
    waiter_map scratch;
    scratch.emplace(0, waiter{std::string(key), deadline, std::move(on_done), std::nullopt});
    waiter_map::node_type node = scratch.extract(scratch.begin());
    deadline_set scratch_deadlines;
    scratch_deadlines.emplace(deadline, 0);
    deadline_set::node_type deadline_node = scratch_deadlines.extract(scratch_deadlines.begin());

    key_entry* entry = nullptr;
    {
        const std::lock_guard lock(mutex_);
        // Check again: a slot released since try_acquire found nobody queued
        // and must not be left idle while we wait for the next release.
        entry = try_take_locked(key);
        if (entry == nullptr) {
            const waiter_id id = next_id_++;
            node.key() = id;
            deadline_node.value().second = id;
            queue_.insert(std::move(node));
            deadlines_.insert(std::move(deadline_node));
            return {std::nullopt, id};
        }
    }
    // `node`, holding on_done, is destroyed uncalled after the lock is gone.
    return {slot(shared_from_this(), entry), 0};
}

bool concurrency_limiter::cancel(waiter_id id) {
    // Destroyed after the lock is released: on_done's captures may call back
    // into this limiter from their destructors.
    waiter_map::node_type node;
    {
        const std::lock_guard lock(mutex_);
        const auto it = queue_.find(id);
        if (it == queue_.end()) {
            return false;
        }
        deadlines_.erase({it->second.deadline, id});
        node = queue_.extract(it);
    }
    return true;
}

void concurrency_limiter::expire(std::chrono::nanoseconds now) noexcept {
    ready_map ready;
    {
        const std::lock_guard lock(mutex_);
        while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
            const waiter_id id = deadlines_.begin()->second;
            deadlines_.erase(deadlines_.begin());
            ready.insert(queue_.extract(id));
        }
    }
    deliver(std::move(ready));
}

std::optional<std::chrono::nanoseconds> concurrency_limiter::next_deadline() const {
    const std::lock_guard lock(mutex_);
    if (deadlines_.empty()) {
        return std::nullopt;
    }
    return deadlines_.begin()->first;
}

void concurrency_limiter::grant_locked(ready_map& ready) noexcept {
    // One pass is enough: granting only ever makes the rule stricter for the
    // requests after it (more in flight, perhaps one more active key), so a
    // request skipped earlier in the pass could not take a slot later in it.
    const std::size_t capacity = capacity_.load(std::memory_order_relaxed);
    for (auto it = queue_.begin(); it != queue_.end() && (capacity == 0 || total_ < capacity);) {
        key_entry* entry = nullptr;
        try {
            entry = try_take_locked(it->second.key);
        } catch (...) {
            // Out of memory for a new key's node. We are returning a slot
            // (noexcept): leave the request queued rather than terminate; it
            // is granted on a later release or refused at its deadline.
            return;
        }
        if (entry == nullptr) {
            ++it;
            continue;
        }
        it->second.granted = slot(shared_from_this(), entry);
        deadlines_.erase({it->second.deadline, it->first});
        const auto next = std::next(it);
        ready.insert(queue_.extract(it));
        it = next;
    }
}

void concurrency_limiter::release_slot(key_entry* entry) noexcept {
    ready_map ready;
    {
        const std::lock_guard lock(mutex_);
        --total_;
        if (--entry->second == 0) {
            // The key stops being active; every other key's share grows at
            // once, because shares are computed at acquire time.
            const auto it = keys_.find(entry->first);
            if (spare_.size() < spare_.capacity()) {
                spare_.push_back(keys_.extract(it));
            } else {
                keys_.erase(it);
            }
        }
        if (!queue_.empty()) {
            grant_locked(ready);
        }
    }
    deliver(std::move(ready));
}

void concurrency_limiter::deliver(ready_map ready) noexcept {
    // A callback that drops its slot (its client is gone) returns it, which
    // grants the next request, whose callback may drop it too... Run those
    // from this loop instead of recursing, so a long queue of abandoned
    // requests cannot overflow the stack. Shared by all limiters on a thread.
    static thread_local ready_map* pending = nullptr;
    if (ready.empty()) {
        return;
    }
    if (pending != nullptr) {
        pending->merge(ready);
        return;
    }
    ready_map batch = std::move(ready);
    pending = &batch;
    while (!batch.empty()) {
        ready_map::node_type node = batch.extract(batch.begin());
        waiter& due = node.mapped();
        due.on_done(std::move(due.granted));
        // `node` dies here: an untaken slot is returned, and on_done's
        // captures are destroyed, still outside any lock.
    }
    pending = nullptr;
}

std::size_t concurrency_limiter::in_flight() const {
    const std::lock_guard lock(mutex_);
    return total_;
}

std::size_t concurrency_limiter::in_flight(std::string_view key) const {
    const std::lock_guard lock(mutex_);
    const auto it = keys_.find(key);
    return it != keys_.end() ? it->second : 0;
}

std::size_t concurrency_limiter::active_keys() const {
    const std::lock_guard lock(mutex_);
    return keys_.size();
}

std::vector<std::pair<std::string, std::size_t>> concurrency_limiter::keys_in_flight() const {
    std::vector<std::pair<std::string, std::size_t>> out;
    const std::lock_guard lock(mutex_);
    out.reserve(keys_.size());
    for (const auto& [key, count] : keys_) {
        out.emplace_back(key, count);
    }
    return out;
}

std::vector<std::pair<std::string, std::size_t>> concurrency_limiter::top_in_flight(
    std::size_t n) const {
    auto out = keys_in_flight();
    const std::size_t keep = std::min(n, out.size());
    std::partial_sort(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(keep), out.end(),
                      [](const auto& a, const auto& b) { return a.second > b.second; });
    out.resize(keep);
    return out;
}

std::size_t concurrency_limiter::queued() const {
    const std::lock_guard lock(mutex_);
    return queue_.size();
}

}  // namespace tollgate::limit
