// The emulation's runtime: a pool of threads that run the blocks of a grid one at a time,
// the block barrier and the warp collectives, with their checks (cuda_emu.h, README.md).
#include "cuda_emu.h"

#include <cxxabi.h>
#include <dlfcn.h>

#include <atomic>
#include <bit>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <list>
#include <memory>
#include <mutex>
#include <semaphore>
#include <sstream>
#include <thread>
#include <vector>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
extern "C" {
void AnnotateIgnoreReadsBegin(const char* file, int line);
void AnnotateIgnoreReadsEnd(const char* file, int line);
void AnnotateIgnoreWritesBegin(const char* file, int line);
void AnnotateIgnoreWritesEnd(const char* file, int line);
void AnnotateIgnoreSyncBegin(const char* file, int line);
void AnnotateIgnoreSyncEnd(const char* file, int line);
}
#endif

thread_local uint3 threadIdx{0, 0, 0};
thread_local uint3 blockIdx{0, 0, 0};
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace cuda_emu {
namespace {

constexpr int kWarp = 32;
constexpr unsigned kMaxGridX = 0x7fffffffu;
constexpr unsigned kMaxGridYZ = 65535;
constexpr unsigned kMaxBlockThreads = 1024;
constexpr unsigned kMaxBlockXY = 1024, kMaxBlockZ = 64;

std::string g_context;
LaunchStats g_stats;

// Under ThreadSanitizer, the runtime's own bookkeeping (one mutex for the block) must neither
// be checked nor order the emulated threads: that mutex would order any two threads that
// ever meet it and hide the races to be found. Inside a RuntimeSection TSan ignores accesses
// and synchronization; the ordering CUDA gives is stated with hb_release / hb_acquire: a
// barrier orders the whole block, a warp collective its lanes.
#if defined(__SANITIZE_THREAD__)
struct RuntimeSection {
  RuntimeSection() {
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
  }
  ~RuntimeSection() {
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  }
};
void hb_release(void* token) { __tsan_release(token); }
void hb_acquire(void* token) { __tsan_acquire(token); }
#else
struct RuntimeSection {
  RuntimeSection() {}
};
void hb_release(void*) {}
void hb_acquire(void*) {}
#endif

enum class State { kRunning, kBarrier, kCollective, kExited };

const char* state_name(State s) {
  switch (s) {
    case State::kRunning: return "running";
    case State::kBarrier: return "waiting at __syncthreads";
    case State::kCollective: return "waiting in a warp shuffle/__syncwarp";
    default: return "exited";
  }
}

// One warp collective (shuffle or __syncwarp) in progress: the lanes named in its mask
// deposit their values; it completes when all of them have.
struct Collective {
  unsigned mask;
  ShuffleKind kind;
  int width;
  bool is_syncwarp;
  char* token;  // the address its lanes release and acquire (ThreadSanitizer)
  unsigned arrived = 0;
  bool complete = false;
  int readers = 0;
  uint64_t values[kWarp] = {};
};

// Tokens are reused round robin (never freed: a freed address could pass an old order on to
// a new collective); a reused one carries only older orderings among the same warp's lanes.
constexpr int kTokens = 64;

struct Warp {
  std::condition_variable cv;
  std::list<Collective> pending;
  uint64_t collectives = 0;
  char tokens[kTokens] = {};
};

// The synchronization state of the block being run; every field is guarded by mu.
struct Block {
  std::mutex mu;
  std::condition_variable barrier_cv;
  std::string kernel;
  uint3 index{0, 0, 0};
  int threads = 0;
  int barrier_arrived = 0;
  uint64_t barrier_generation = 0;
  char barrier_tokens[2] = {};  // alternate: a fast thread's next barrier is not this one
  int blocked = 0;              // threads waiting whose wait is not yet satisfied
  int exited = 0;
  std::vector<State> state;
  std::vector<Warp> warps;
};

Block g_block;
thread_local int t_linear = -1;  // linear thread index in its block; -1 off the emulation

[[noreturn]] void fatal_locked(const std::string& what) {
  std::fprintf(stderr,
               "cuda_emu: ERROR: %s\n  kernel: %s\n  block (%u, %u, %u), thread %d\n  case: %s\n",
               what.c_str(), g_block.kernel.c_str(), g_block.index.x, g_block.index.y,
               g_block.index.z, t_linear, g_context.c_str());
  std::fflush(stderr);
  std::_Exit(3);
}

[[noreturn]] void fatal_launch(const std::string& name, const std::string& what) {
  std::fprintf(stderr, "cuda_emu: ERROR: launch of %s: %s\n  case: %s\n", name.c_str(),
               what.c_str(), g_context.c_str());
  std::fflush(stderr);
  std::_Exit(3);
}

std::string thread_states() {
  std::ostringstream out;
  for (int t = 0; t < g_block.threads;) {
    int u = t;
    while (u + 1 < g_block.threads && g_block.state[u + 1] == g_block.state[t]) ++u;
    out << "\n    threads " << t << ".." << u << ": " << state_name(g_block.state[t]);
    t = u + 1;
  }
  return out.str();
}

// Called by a thread about to wait: when every other thread is waiting too (or gone), nothing
// can release any of them.
void check_deadlock() {
  if (g_block.blocked + g_block.exited == g_block.threads) {
    fatal_locked("deadlock: every thread of the block waits" + thread_states());
  }
}

void wait_released(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                   const std::function<bool()>& released) {
  ++g_block.blocked;
  check_deadlock();
  cv.wait(lock, released);
}

int source_lane(ShuffleKind kind, int lane, int operand, int width) {
  const int first = lane & ~(width - 1), last = first + width - 1;
  switch (kind) {
    case ShuffleKind::kIdx: return first + (operand & (width - 1));
    case ShuffleKind::kUp: return lane - operand < first ? lane : lane - operand;
    case ShuffleKind::kDown: return lane + operand > last ? lane : lane + operand;
    default: {
      // A lane may read an earlier group of `width` lanes, never a later one.
      const int src = lane ^ operand;
      return src > last ? lane : src;
    }
  }
}

uint64_t collective(unsigned mask, uint64_t value, ShuffleKind kind, int operand, int width,
                    bool is_syncwarp) {
  if (t_linear < 0) fatal_launch("(none)", "a warp collective called outside a kernel");
  const int lane = t_linear % kWarp, warp_index = t_linear / kWarp;
  const char* what = is_syncwarp ? "__syncwarp" : "shuffle";
  std::list<Collective>::iterator it;
  Warp* warp;
  {  // Join the collective (the one pending for this mask, or a new one).
    RuntimeSection section;
    std::lock_guard<std::mutex> lock(g_block.mu);
    warp = &g_block.warps[warp_index];
    if (((mask >> lane) & 1u) == 0) {
      fatal_locked(std::string(what) + ": lane " + std::to_string(lane) +
                   " calls it with a mask that does not name it");
    }
    if (width < 1 || width > kWarp || (width & (width - 1)) != 0) {
      fatal_locked(std::string(what) + ": width " + std::to_string(width) +
                   " is not a power of two in [1, 32]");
    }
    for (int l = 0; l < kWarp; ++l) {
      if (((mask >> l) & 1u) == 0) continue;
      const int t = warp_index * kWarp + l;
      if (t >= g_block.threads || g_block.state[t] == State::kExited) {
        fatal_locked(std::string(what) + ": the mask names lane " + std::to_string(l) +
                     ", which has exited or does not exist");
      }
    }
    for (it = warp->pending.begin(); it != warp->pending.end(); ++it) {
      if (it->complete || (it->mask & mask) == 0) continue;
      if (it->mask != mask || it->kind != kind || it->width != width ||
          it->is_syncwarp != is_syncwarp) {
        fatal_locked(std::string(what) + ": lanes of one warp meet in different collectives " +
                     "(masks, kinds or widths differ)");
      }
      break;
    }
    if (it == warp->pending.end()) {
      char* token = &warp->tokens[warp->collectives++ % kTokens];
      warp->pending.push_back({mask, kind, width, is_syncwarp, token});
      it = std::prev(warp->pending.end());
      it->readers = std::popcount(mask);
    }
  }
  char* const token = it->token;
  hb_release(token);
  uint64_t result;
  {  // Arrive, wait for the others, read the source lane's value.
    RuntimeSection section;
    std::unique_lock<std::mutex> lock(g_block.mu);
    Collective& c = *it;
    c.values[lane] = value;
    c.arrived |= 1u << lane;
    if (c.arrived == mask) {
      c.complete = true;
      g_block.blocked -= std::popcount(mask) - 1;
      for (int l = 0; l < kWarp; ++l) {
        if ((mask >> l) & 1u) g_block.state[warp_index * kWarp + l] = State::kRunning;
      }
      ++g_stats.shuffles;
      warp->cv.notify_all();
    } else {
      g_block.state[t_linear] = State::kCollective;
      wait_released(lock, warp->cv, [&] { return c.complete; });
    }
    const int src = source_lane(kind, lane, operand, width);
    if (((mask >> src) & 1u) == 0) {
      fatal_locked("shuffle: lane " + std::to_string(lane) + " reads lane " + std::to_string(src) +
                   ", which the mask does not name (undefined in CUDA)");
    }
    result = c.values[src];
    if (--c.readers == 0) warp->pending.erase(it);
  }
  hb_acquire(token);
  return result;
}

// Persistent threads; thread i runs linear index i of each block. Each has a semaphore to
// start it (no herd on one condition variable), and the last to finish wakes the caller.
class Pool {
 public:
  ~Pool() {
    quit_ = true;
    for (auto& w : workers_) w->start.release();
    for (auto& w : workers_) w->thread.join();
  }

  void run_block(int threads, const std::function<void()>& body, dim3 block, dim3 grid,
                 uint3 index) {
    while (static_cast<int>(workers_.size()) < threads) {
      auto w = std::make_unique<Worker>();
      const int id = static_cast<int>(workers_.size());
      w->thread = std::thread([this, self = w.get(), id] { work(*self, id); });
      workers_.push_back(std::move(w));
    }
    body_ = &body;
    block_ = block;
    grid_ = grid;
    index_ = index;
    remaining_.store(threads);
    for (int i = 0; i < threads; ++i) workers_[i]->start.release();
    done_.acquire();
  }

 private:
  struct Worker {
    std::binary_semaphore start{0};
    std::thread thread;
  };

  void work(Worker& self, int id) {
    for (;;) {
      self.start.acquire();
      if (quit_) return;
      blockDim = block_;
      gridDim = grid_;
      blockIdx = index_;
      const unsigned plane = block_.x * block_.y;
      threadIdx = {id % block_.x, id % plane / block_.x, id / plane};
      t_linear = id;
      (*body_)();
      exit_kernel();
      t_linear = -1;
      if (remaining_.fetch_sub(1) == 1) done_.release();
    }
  }

  static void exit_kernel() {
    RuntimeSection section;
    std::lock_guard<std::mutex> lock(g_block.mu);
    g_block.state[t_linear] = State::kExited;
    ++g_block.exited;
    if (g_block.barrier_arrived > 0) {
      fatal_locked("a thread exits while " + std::to_string(g_block.barrier_arrived) +
                   " threads wait at __syncthreads (divergent barrier)" + thread_states());
    }
    const int lane = t_linear % kWarp;
    for (const Collective& c : g_block.warps[t_linear / kWarp].pending) {
      if (!c.complete && ((c.mask >> lane) & 1u)) {
        fatal_locked("lane " + std::to_string(lane) +
                     " exits while named in the mask of a pending warp collective" +
                     thread_states());
      }
    }
    if (g_block.blocked > 0 && g_block.blocked + g_block.exited == g_block.threads) {
      fatal_locked("deadlock: the last running thread exits while others wait" + thread_states());
    }
  }

  std::vector<std::unique_ptr<Worker>> workers_;
  std::binary_semaphore done_{0};
  std::atomic<int> remaining_{0};
  bool quit_ = false;  // written before the releases that let workers read it
  const std::function<void()>* body_ = nullptr;
  dim3 block_, grid_;
  uint3 index_{0, 0, 0};
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

uint64_t shuffle(unsigned mask, uint64_t value, ShuffleKind kind, int operand, int width) {
  return collective(mask, value, kind, operand, width, false);
}

void syncwarp(unsigned mask) {
  collective(mask, 0, ShuffleKind::kIdx, t_linear % kWarp, kWarp, true);
}

void syncthreads() {
  if (t_linear < 0) fatal_launch("(none)", "__syncthreads called outside a kernel");
  char* token;
  {
    RuntimeSection section;
    std::lock_guard<std::mutex> lock(g_block.mu);
    if (g_block.exited > 0) {
      fatal_locked("__syncthreads after " + std::to_string(g_block.exited) +
                   " threads of the block exited (divergent barrier)");
    }
    // This barrier cannot complete before this thread arrives: the generation holds.
    token = &g_block.barrier_tokens[g_block.barrier_generation & 1];
  }
  hb_release(token);
  {
    RuntimeSection section;
    std::unique_lock<std::mutex> lock(g_block.mu);
    if (++g_block.barrier_arrived == g_block.threads) {
      g_block.barrier_arrived = 0;
      ++g_block.barrier_generation;
      g_block.blocked -= g_block.threads - 1;
      for (State& st : g_block.state) st = State::kRunning;
      ++g_stats.barriers;
      g_block.barrier_cv.notify_all();
    } else {
      g_block.state[t_linear] = State::kBarrier;
      const uint64_t generation = g_block.barrier_generation;
      wait_released(lock, g_block.barrier_cv,
                    [&] { return g_block.barrier_generation != generation; });
    }
  }
  hb_acquire(token);
}

void set_context(std::string context) { g_context = std::move(context); }

LaunchStats& stats() { return g_stats; }

std::string Launch::symbol_name(const void* function) {
  Dl_info info;
  if (dladdr(function, &info) == 0 || info.dli_sname == nullptr) return "(unnamed kernel)";
  int status = 0;
  char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
  std::string name = status == 0 && demangled != nullptr ? demangled : info.dli_sname;
  std::free(demangled);
  return name;
}

void run_grid(const std::string& name, dim3 grid, dim3 block, const std::function<void()>& body,
              const uint3* only) {
  if (t_linear >= 0) fatal_launch(name, "a launch from inside a kernel (not emulated)");
  if (grid.x < 1 || grid.x > kMaxGridX || grid.y < 1 || grid.y > kMaxGridYZ || grid.z < 1 ||
      grid.z > kMaxGridYZ) {
    fatal_launch(name, "grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) + ", " +
                           std::to_string(grid.z) + ") is outside CUDA's limits");
  }
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (block.x < 1 || block.y < 1 || block.z < 1 || block.x > kMaxBlockXY || block.y > kMaxBlockXY ||
      block.z > kMaxBlockZ || threads > kMaxBlockThreads) {
    fatal_launch(name, "block (" + std::to_string(block.x) + ", " + std::to_string(block.y) + ", " +
                           std::to_string(block.z) + ") is outside CUDA's limits");
  }
  ++g_stats.launches;
  auto run_one = [&](uint3 index) {
    {
      std::lock_guard<std::mutex> lock(g_block.mu);
      g_block.kernel = name;
      g_block.index = index;
      g_block.threads = static_cast<int>(threads);
      g_block.barrier_arrived = 0;
      g_block.blocked = 0;
      g_block.exited = 0;
      g_block.state.assign(threads, State::kRunning);
      if (g_block.warps.size() < (threads + kWarp - 1) / kWarp) {
        g_block.warps = std::vector<Warp>((threads + kWarp - 1) / kWarp);
      }
      for (Warp& w : g_block.warps) w.pending.clear();
    }
    pool().run_block(static_cast<int>(threads), body, block, grid, index);
    ++g_stats.blocks;
    g_stats.threads += static_cast<int64_t>(threads);
  };
  if (only != nullptr) {
    if (only->x >= grid.x || only->y >= grid.y || only->z >= grid.z) {
      fatal_launch(name, "the block to run alone is outside the grid");
    }
    run_one(*only);
    return;
  }
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) run_one({x, y, z});
    }
  }
}

}  // namespace cuda_emu
