// Fifo: a thing's queue of WorkItems that keeps its storage. A ring over a vector whose size is a
// power of two; it doubles when full and never shrinks, so a thing's queue allocates nothing per
// request once it reached its depth. (std::deque<WorkItem> allocated a node per push_back and
// freed one per pop_front: one WorkItem fills a node; bench/README.md, "Per-request cost".)
//
// References to items stay valid until the next push_back that grows the ring: ThingQueues pushes
// only from Scheduler::submit/post, never while the scheduler holds a reference to an item.
// A popped slot is reset to T{} at once, so what the item owned is freed when it leaves.
// REQUIRES: T is default-constructible and move-assignable. Thread: whatever owns it.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "base/assert.hpp"

namespace chunkd::engine {

template <class T>
class Fifo {
 public:
  Fifo() = default;
  Fifo(Fifo&& other) noexcept
      : slots_(std::move(other.slots_)),
        head_(std::exchange(other.head_, 0)),
        size_(std::exchange(other.size_, 0)) {
    other.slots_.clear();
  }
  Fifo& operator=(Fifo&& other) noexcept {
    if (this == &other) return *this;
    slots_ = std::move(other.slots_);
    other.slots_.clear();
    head_ = std::exchange(other.head_, 0);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }
  Fifo(const Fifo&) = delete;
  Fifo& operator=(const Fifo&) = delete;
  ~Fifo() = default;

  bool empty() const { return size_ == 0; }
  std::size_t size() const { return size_; }
  std::size_t capacity() const { return slots_.size(); }

  // The i-th item from the front. REQUIRES: i < size().
  T& operator[](std::size_t i) {
    CHUNKD_ASSERT(i < size_);
    return slots_[index(i)];
  }
  const T& operator[](std::size_t i) const {
    CHUNKD_ASSERT(i < size_);
    return slots_[index(i)];
  }
  T& front() { return (*this)[0]; }
  const T& front() const { return (*this)[0]; }
  T& back() { return (*this)[size_ - 1]; }
  const T& back() const { return (*this)[size_ - 1]; }

  void push_back(T value) {
    if (size_ == slots_.size()) grow();
    slots_[index(size_)] = std::move(value);
    ++size_;
  }
  void pop_front() {
    CHUNKD_ASSERT(size_ > 0);
    slots_[head_] = T{};
    head_ = index(1);
    --size_;
  }
  void pop_back() {
    CHUNKD_ASSERT(size_ > 0);
    slots_[index(size_ - 1)] = T{};
    --size_;
  }

 private:
  std::size_t index(std::size_t i) const { return (head_ + i) & (slots_.size() - 1); }

  void grow() {
    std::vector<T> bigger(slots_.empty() ? 1 : 2 * slots_.size());
    for (std::size_t i = 0; i < size_; ++i) bigger[i] = std::move(slots_[index(i)]);
    slots_.swap(bigger);
    head_ = 0;
  }

  std::vector<T> slots_;  // size 0 or a power of two
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

}  // namespace chunkd::engine
